//! Rendering a thread with Russian-doll fragment caching.
//!
//! Each comment is one askama fragment. Its cache key is made from the comment's own version and
//! the keys of its replies, so a change anywhere below a comment changes that comment's key (and
//! its parent's, up to the root) while every other key stays the same: an edit re-renders exactly
//! the edited comment and its ancestors; everything else comes from the cache.

use askama::Template;
use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use super::repo::CommentRow;
use super::tree::Tree;

/// Changes whenever comment.html changes, so old fragments are never reused with a new template.
const FRAGMENT_SCHEMA: u32 = 5;

#[derive(Template)]
#[template(path = "comment.html", whitespace = "minimize")]
struct CommentFragment<'a> {
    c: &'a CommentRow,
    /// The body as sanitized HTML (see `markdown`): the only markup a person's words become.
    body_html: Cow<'a, str>,
    replies: &'a str,
    continue_url: Option<String>,
}

#[derive(Template)]
#[template(path = "orphan.html")]
struct Orphan<'a> {
    post_id: i64,
    parent: i64,
    author: Option<&'a str>,
    fragment: &'a str,
}

/// Where a rendered tree sits: what "continue this thread" links point at.
pub struct Frame {
    pub post_id: i64,
    /// Who wrote the comments that replies at the top of a later page answer (by id).
    pub parents: std::collections::HashMap<i64, String>,
    /// The depth of the page's top: the post's comments (0) or a subthread's first comment.
    pub root_depth: i32,
    /// Comments at this depth show a link instead of their replies.
    pub max_depth: i32,
}

fn is_cut(c: &CommentRow, frame: &Frame) -> bool {
    c.depth >= frame.max_depth && c.children_count > 0
}

/// The cache key of every comment, computed bottom-up.
pub fn fragment_keys(tree: &Tree, frame: &Frame) -> Vec<String> {
    let mut keys = vec![String::new(); tree.rows.len()];
    // Replies come after their parent in depth-first order: walking backwards meets them first.
    for i in (0..tree.rows.len()).rev() {
        let c = &tree.rows[i];
        let mut h = DefaultHasher::new();
        (FRAGMENT_SCHEMA, c.id, c.version, &c.author, c.children_count, is_cut(c, frame)).hash(&mut h);
        for &child in &tree.children[i] {
            keys[child].hash(&mut h);
        }
        keys[i] = format!("frag:c{}:v{}:{:016x}", c.id, c.version, h.finish());
    }
    keys
}

pub struct Rendered {
    pub html: String,
    /// Comments whose fragment had to be rendered (not found in the cache).
    pub rendered: Vec<i64>,
    pub hits: usize,
    /// New fragments, to be stored.
    pub fresh: Vec<(String, String)>,
}

/// Renders the tree, taking whatever fragments `cached` has (aligned with `keys`).
pub fn render(tree: &Tree, frame: &Frame, keys: &[String], cached: Vec<Option<String>>) -> Result<Rendered, askama::Error> {
    let n = tree.rows.len();
    // Only fragments under a miss are needed at all: a cached parent already contains its replies.
    let mut needed = vec![false; n];
    for &root in &tree.roots {
        needed[root] = true;
    }
    for i in 0..n {
        if needed[i] && cached[i].is_none() {
            for &child in &tree.children[i] {
                needed[child] = true;
            }
        }
    }
    let mut html: Vec<Option<String>> = cached;
    let mut out = Rendered { html: String::new(), rendered: Vec::new(), hits: 0, fresh: Vec::new() };
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        if html[i].is_some() {
            out.hits += 1;
            continue;
        }
        let c = &tree.rows[i];
        let cut = is_cut(c, frame);
        let replies: String = if cut {
            String::new()
        } else {
            tree.children[i].iter().filter_map(|&child| html[child].as_deref()).collect()
        };
        let fragment = CommentFragment {
            c,
            body_html: if c.deleted { Cow::Borrowed("") } else { super::markdown::shown(c.body_html.as_deref(), &c.body) },
            replies: &replies,
            continue_url: cut.then(|| format!("/posts/{}/comments/{}", frame.post_id, c.id)),
        }
        .render()?;
        out.rendered.push(c.id);
        out.fresh.push((keys[i].clone(), fragment.clone()));
        html[i] = Some(fragment);
    }
    for &root in &tree.roots {
        let Some(fragment) = html[root].as_deref() else { continue };
        let c = &tree.rows[root];
        // A reply whose parent is on an earlier page says so, and links to the parent in context.
        match c.parent_comment_id.filter(|_| c.depth > frame.root_depth) {
            Some(parent) => {
                let author = frame.parents.get(&parent).map(String::as_str);
                out.html.push_str(&Orphan { post_id: frame.post_id, parent, author, fragment }.render()?);
            }
            None => out.html.push_str(fragment),
        }
    }
    Ok(out)
}
