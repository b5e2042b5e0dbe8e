//! The comment tree, built in memory in one pass over depth-first rows.

use std::collections::HashMap;

use super::repo::CommentRow;

pub struct Tree {
    pub rows: Vec<CommentRow>,
    pub children: Vec<Vec<usize>>,
    pub roots: Vec<usize>,
}

/// Rows arrive sorted by path, so every parent comes before its replies: one pass, linear time.
/// A reply whose parent is not among the rows (a page that starts mid-thread) becomes a root.
pub fn build(rows: Vec<CommentRow>) -> Tree {
    let mut index: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
    let mut children = vec![Vec::new(); rows.len()];
    let mut roots = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        match row.parent_comment_id.and_then(|p| index.get(&p)) {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
        index.insert(row.id, i);
    }
    Tree { rows, children, roots }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, parent: Option<i64>, path: &str) -> CommentRow {
        CommentRow {
            id,
            post_id: 1,
            parent_comment_id: parent,
            user_id: 1,
            body: String::new(),
            body_html: None,
            depth: path.matches('.').count() as i32,
            path: path.into(),
            upvotes: 0,
            children_count: 0,
            version: 1,
            edited: false,
            deleted: false,
            created_at: chrono::Utc::now(),
            author: String::new(),
        }
    }

    #[test]
    fn depth_first_rows_become_a_tree() {
        let tree = build(vec![row(1, None, "1"), row(2, Some(1), "1.2"), row(4, Some(2), "1.2.4"), row(3, Some(1), "1.3"), row(5, None, "5")]);
        assert_eq!(tree.roots, vec![0, 4]);
        assert_eq!(tree.children[0], vec![1, 3]);
        assert_eq!(tree.children[1], vec![2]);
        assert!(tree.children[4].is_empty());
    }

    #[test]
    fn a_page_starting_mid_thread_shows_orphans_as_roots() {
        let tree = build(vec![row(4, Some(2), "1.2.4"), row(3, Some(1), "1.3")]);
        assert_eq!(tree.roots, vec![0, 1]);
    }
}
