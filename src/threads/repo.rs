//! Every query the threads area makes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use std::ops::Bound;

use super::CommentBody;
use crate::schema::{comment_votes, comments, posts, users};

#[derive(Debug, Clone, Queryable)]
pub struct PostRow {
    pub id: i64,
    pub title: String,
    pub body: String,
    /// `body` as sanitized HTML, made when it was written (`None`: made when shown).
    pub body_html: Option<String>,
    pub comments_count: i32,
    pub created_at: DateTime<Utc>,
    pub author: String,
    /// Who wrote it: the page's style shows them its edit and delete links.
    pub user_id: i64,
    /// Its author deleted it: title and text are not shown; replies stay.
    pub deleted: bool,
}

impl PostRow {
    /// Its title, or what a deleted discussion is called.
    pub fn shown_title(&self) -> &str {
        if self.deleted { DELETED_POST } else { &self.title }
    }
}

/// What a discussion its author deleted is called where its title was.
pub const DELETED_POST: &str = "A deleted discussion";

/// A comment with what its fragment shows.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = comments, check_for_backend(diesel::pg::Pg))]
pub struct CommentRow {
    pub id: i64,
    pub post_id: i64,
    pub parent_comment_id: Option<i64>,
    pub user_id: i64,
    pub body: String,
    /// `body` as sanitized HTML, made when it was written (`None`: made when shown).
    pub body_html: Option<String>,
    pub depth: i32,
    pub path: String,
    pub upvotes: i32,
    pub children_count: i32,
    pub version: i32,
    #[diesel(select_expression = comments::edited_at.is_not_null())]
    #[diesel(select_expression_type = diesel::dsl::IsNotNull<comments::edited_at>)]
    pub edited: bool,
    #[diesel(select_expression = comments::deleted_at.is_not_null())]
    #[diesel(select_expression_type = diesel::dsl::IsNotNull<comments::deleted_at>)]
    pub deleted: bool,
    pub created_at: DateTime<Utc>,
    #[diesel(select_expression = users::name)]
    pub author: String,
}

fn comment_columns() -> diesel::dsl::AsSelect<CommentRow, diesel::pg::Pg> {
    CommentRow::as_select()
}

pub fn post(conn: &mut PgConnection, post_id: i64) -> QueryResult<Option<PostRow>> {
    posts::table
        .inner_join(users::table)
        .filter(posts::id.eq(post_id))
        .select((
            posts::id,
            posts::title,
            posts::body,
            posts::body_html,
            posts::comments_count,
            posts::created_at,
            users::name,
            posts::user_id,
            posts::deleted_at.is_not_null(),
        ))
        .first(conn)
        .optional()
}

/// Changes the author's own discussion (not one they deleted); `false`: not theirs, or gone.
pub fn update_post(conn: &mut PgConnection, post_id: i64, user_id: i64, title: &str, body: &CommentBody, now: DateTime<Utc>) -> QueryResult<bool> {
    diesel::update(posts::table.find(post_id).filter(posts::user_id.eq(user_id)).filter(posts::deleted_at.is_null()))
        .set((posts::title.eq(title), posts::body.eq(body.as_str()), posts::body_html.eq(body.html()), posts::updated_at.eq(now)))
        .execute(conn)
        .map(|n| n > 0)
}

/// Deletes the author's own discussion: its title and text are no longer shown (kept in the row,
/// as a deleted comment's are), its replies stay. `false`: not theirs, or already deleted.
pub fn delete_post(conn: &mut PgConnection, post_id: i64, user_id: i64, now: DateTime<Utc>) -> QueryResult<bool> {
    diesel::update(posts::table.find(post_id).filter(posts::user_id.eq(user_id)).filter(posts::deleted_at.is_null()))
        .set((posts::deleted_at.eq(now), posts::updated_at.eq(now)))
        .execute(conn)
        .map(|n| n > 0)
}

/// What the top of a page of comments needs besides its rows.
pub struct PageHead {
    pub post: PostRow,
    /// The page's cursor is the path of one of the post's comments (always true without one).
    pub cursor_exists: bool,
    /// The cursor of the page before this one; `None` when that page is the first.
    pub previous: Option<String>,
    /// Who wrote the cursor's comment and each of its ancestors, by id ("[deleted]" for deleted
    /// ones). A reply at the top of this page whose parent is on an earlier page answers one of
    /// them: in path order, a parent before the cursor with a child after it is an ancestor of it.
    pub ancestors: std::collections::HashMap<i64, String>,
}

#[derive(QueryableByName)]
struct PageHeadRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    title: String,
    #[diesel(sql_type = Text)]
    body: String,
    #[diesel(sql_type = Nullable<Text>)]
    body_html: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    comments_count: i32,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    author: String,
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    deleted: bool,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    cursor_exists: bool,
    #[diesel(sql_type = Nullable<Text>)]
    previous: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Array<BigInt>)]
    ancestor_ids: Vec<i64>,
    #[diesel(sql_type = diesel::sql_types::Array<Text>)]
    ancestor_authors: Vec<String>,
}

/// The post, whether `cursor` (a page cursor: a comment's path, or "" for the first page) is one
/// of its comments, and where the previous page starts — all in one query, so a page after a
/// cursor still costs two. The previous page ends at the cursor and holds `page_size` rows of the
/// same range (`from` on, down to `max_depth`): its own cursor is the row `page_size` before.
pub fn page_head(conn: &mut PgConnection, post_id: i64, cursor: &str, from: &str, max_depth: i32, page_size: i64) -> QueryResult<Option<PageHead>> {
    let row: Option<PageHeadRow> = diesel::sql_query(
        "SELECT p.id, p.title, p.body, p.body_html, p.comments_count, p.created_at, u.name AS author, p.user_id, \
                p.deleted_at IS NOT NULL AS deleted, \
                ($2 = '' OR EXISTS (SELECT 1 FROM comments c WHERE c.post_id = p.id AND c.path = $2)) AS cursor_exists, \
                (SELECT c.path FROM comments c \
                  WHERE c.post_id = p.id AND c.depth <= $4 AND c.path >= $3 AND c.path <= $2 \
                  ORDER BY c.path DESC OFFSET $5 LIMIT 1) AS previous, \
                a.ids AS ancestor_ids, a.authors AS ancestor_authors \
         FROM posts p JOIN users u ON u.id = p.user_id \
         CROSS JOIN LATERAL ( \
             SELECT COALESCE(array_agg(c.id), '{}') AS ids, \
                    COALESCE(array_agg(CASE WHEN c.deleted_at IS NULL THEN cu.name ELSE '[deleted]' END), '{}') AS authors \
             FROM comments c JOIN users cu ON cu.id = c.user_id \
             WHERE c.post_id = p.id AND c.id = ANY (string_to_array(NULLIF($2, ''), '.')::bigint[])) a \
         WHERE p.id = $1",
    )
    .bind::<BigInt, _>(post_id)
    .bind::<Text, _>(cursor)
    .bind::<Text, _>(from)
    .bind::<diesel::sql_types::Integer, _>(max_depth)
    .bind::<BigInt, _>(page_size)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| PageHead {
        post: PostRow {
            id: r.id,
            title: r.title,
            body: r.body,
            body_html: r.body_html,
            comments_count: r.comments_count,
            created_at: r.created_at,
            author: r.author,
            user_id: r.user_id,
            deleted: r.deleted,
        },
        cursor_exists: r.cursor_exists,
        previous: r.previous,
        ancestors: r.ancestor_ids.into_iter().zip(r.ancestor_authors).collect(),
    }))
}

/// The cursor of the page (of `page_size` rows from `from` on, down to `max_depth`) that holds the
/// comment at `path`; `None` when that is the first page. Pages are chained by their last row, so
/// the page holding the n-th row starts after row `(n / page_size) * page_size - 1`.
pub fn cursor_of_page_holding(conn: &mut PgConnection, post_id: i64, from: &str, max_depth: i32, path: &str, page_size: i64) -> QueryResult<Option<String>> {
    let in_range = || {
        comments::table
            .filter(comments::post_id.eq(post_id))
            .filter(comments::depth.le(max_depth))
            .filter(comments::path.ge(from.to_string()))
            .filter(comments::path.lt(path.to_string()))
    };
    let before: i64 = in_range().count().get_result(conn)?;
    let page = before / page_size;
    if page == 0 {
        return Ok(None);
    }
    in_range().order(comments::path.asc()).offset(page * page_size - 1).select(comments::path).first(conn).optional()
}

/// A post as the list of discussions shows it: no bodies, which can be 10,000 characters each.
#[derive(Debug, Clone, Queryable)]
pub struct PostListing {
    pub id: i64,
    pub title: String,
    pub comments_count: i32,
    pub author: String,
    pub deleted: bool,
}

/// The newest discussions; a deleted one only while it has replies (listed as deleted).
pub fn recent_posts(conn: &mut PgConnection, limit: i64) -> QueryResult<Vec<PostListing>> {
    posts::table
        .inner_join(users::table)
        .filter(posts::deleted_at.is_null().or(posts::comments_count.gt(0)))
        .order((posts::created_at.desc(), posts::id.desc()))
        .limit(limit)
        .select((posts::id, posts::title, posts::comments_count, users::name, posts::deleted_at.is_not_null()))
        .load(conn)
}

/// One page of a post's discussion, depth-first: the comments after `after` (a path; keyset
/// pagination), down to `max_depth`, at most `limit` of them. One query whatever the tree.
pub fn page(conn: &mut PgConnection, post_id: i64, after: Option<&str>, max_depth: i32, limit: i64) -> QueryResult<Vec<CommentRow>> {
    let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_string()));
    depth_first(conn, post_id, from, None, max_depth, limit)
}

/// A comment with its author.
pub fn comment(conn: &mut PgConnection, comment_id: i64) -> QueryResult<Option<CommentRow>> {
    comments::table.inner_join(users::table).filter(comments::id.eq(comment_id)).select(comment_columns()).first(conn).optional()
}

/// A subtree (the comment and its replies), depth-first, down to `max_depth`, after `after`.
pub fn subtree(conn: &mut PgConnection, root: &CommentRow, after: Option<&str>, max_depth: i32, limit: i64) -> QueryResult<Vec<CommentRow>> {
    let from = after.map_or_else(|| Bound::Included(root.path.clone()), |a| Bound::Excluded(a.to_string()));
    // A subtree is the prefix range [path, path + '/'): '/' sorts right after '.' in "C" collation.
    depth_first(conn, root.post_id, from, Some(format!("{}/", root.path)), max_depth, limit)
}

/// A post's comments with paths from `from` up to (not including) `below`, in path order.
fn depth_first(
    conn: &mut PgConnection,
    post_id: i64,
    from: Bound<String>,
    below: Option<String>,
    max_depth: i32,
    limit: i64,
) -> QueryResult<Vec<CommentRow>> {
    let mut query = comments::table
        .inner_join(users::table)
        .filter(comments::post_id.eq(post_id))
        .filter(comments::depth.le(max_depth))
        .order(comments::path.asc())
        .limit(limit)
        .select(comment_columns())
        .into_boxed();
    query = match from {
        Bound::Included(path) => query.filter(comments::path.ge(path)),
        Bound::Excluded(path) => query.filter(comments::path.gt(path)),
        Bound::Unbounded => query,
    };
    if let Some(below) = below {
        query = query.filter(comments::path.lt(below));
    }
    query.load(conn)
}

/// The baseline that caching is measured against: the classic N+1, children loaded per comment.
pub fn tree_naively(conn: &mut PgConnection, post_id: i64) -> QueryResult<Vec<CommentRow>> {
    fn children(conn: &mut PgConnection, post_id: i64, parent: Option<i64>, out: &mut Vec<CommentRow>) -> QueryResult<()> {
        let mut query = comments::table.inner_join(users::table).filter(comments::post_id.eq(post_id)).order(comments::id).select(comment_columns()).into_boxed();
        query = match parent {
            Some(id) => query.filter(comments::parent_comment_id.eq(id)),
            None => query.filter(comments::parent_comment_id.is_null()),
        };
        for row in query.load::<CommentRow>(conn)? {
            let id = row.id;
            out.push(row);
            children(conn, post_id, Some(id), out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    children(conn, post_id, None, &mut out)?;
    Ok(out)
}

/// Where a comment sits in its post's tree: enough to find the page that shows it.
#[derive(Debug, Clone, QueryableByName, Queryable)]
pub struct Placed {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub post_id: i64,
    #[diesel(sql_type = Text)]
    pub path: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    pub depth: i32,
}

/// Adds a comment (to the post, or as a reply) and moves both counters, in one transaction.
/// `None` when the post, or the parent within that post, does not exist.
pub fn add_comment(
    conn: &mut PgConnection,
    post_id: i64,
    parent_id: Option<i64>,
    user_id: i64,
    body: &CommentBody,
) -> QueryResult<Option<Placed>> {
    conn.transaction(|conn| {
        // The path needs the new id, so the id is drawn first; depth and path come from the parent.
        let created: Option<Placed> = diesel::sql_query(
            "WITH new AS (SELECT nextval(pg_get_serial_sequence('comments', 'id')) AS id), \
                  parent AS (SELECT id, depth, path FROM comments WHERE id = $2 AND post_id = $1) \
             INSERT INTO comments (id, post_id, parent_comment_id, user_id, body, body_html, depth, path) \
             SELECT new.id, p.id, parent.id, $3, $4, $5, COALESCE(parent.depth + 1, 0), \
                    COALESCE(parent.path || '.', '') || lpad(new.id::text, 12, '0') \
             FROM new CROSS JOIN posts p LEFT JOIN parent ON true \
             WHERE p.id = $1 AND ($2 IS NULL OR parent.id IS NOT NULL) \
             RETURNING id, post_id, path, depth",
        )
        .bind::<BigInt, _>(post_id)
        .bind::<Nullable<BigInt>, _>(parent_id)
        .bind::<BigInt, _>(user_id)
        .bind::<Text, _>(body.as_str())
        .bind::<Text, _>(body.html())
        .get_result(conn)
        .optional()?;
        let Some(placed) = created else { return Ok(None) };
        if let Some(parent) = parent_id {
            diesel::update(comments::table.find(parent))
                .set((comments::children_count.eq(comments::children_count + 1), comments::version.eq(comments::version + 1)))
                .execute(conn)?;
        }
        diesel::update(posts::table.find(post_id)).set(posts::comments_count.eq(posts::comments_count + 1)).execute(conn)?;
        Ok(Some(placed))
    })
}

/// Replaces the body of the author's own comment. `Err(NotFound)` for others' or deleted ones.
pub fn edit_comment(conn: &mut PgConnection, comment_id: i64, user_id: i64, body: &CommentBody, now: DateTime<Utc>) -> QueryResult<Option<Placed>> {
    diesel::update(comments::table.find(comment_id).filter(comments::user_id.eq(user_id)).filter(comments::deleted_at.is_null()))
        .set((
            comments::body.eq(body.as_str()),
            comments::body_html.eq(body.html()),
            comments::edited_at.eq(now),
            comments::updated_at.eq(now),
            comments::version.eq(comments::version + 1),
        ))
        .returning((comments::id, comments::post_id, comments::path, comments::depth))
        .get_result(conn)
        .optional()
}

/// Soft delete: the comment shows "[deleted]" and keeps its replies.
/// Deletes the author's own comment (its replies stay, under "[deleted]"); the post's count of
/// comments, which counts only those still there, goes down in the same transaction.
pub fn delete_comment(conn: &mut PgConnection, comment_id: i64, user_id: i64, now: DateTime<Utc>) -> QueryResult<Option<Placed>> {
    conn.transaction(|conn| {
        let deleted: Option<Placed> =
            diesel::update(comments::table.find(comment_id).filter(comments::user_id.eq(user_id)).filter(comments::deleted_at.is_null()))
                .set((comments::deleted_at.eq(now), comments::updated_at.eq(now), comments::version.eq(comments::version + 1)))
                .returning((comments::id, comments::post_id, comments::path, comments::depth))
                .get_result(conn)
                .optional()?;
        if let Some(placed) = &deleted {
            diesel::update(posts::table.find(placed.post_id)).set(posts::comments_count.eq(posts::comments_count - 1)).execute(conn)?;
        }
        Ok(deleted)
    })
}

/// What a vote did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voted {
    Changed,
    /// Already so (a second upvote, undoing a vote never given), or the comment is deleted.
    Unchanged,
    /// People cannot vote for what they wrote.
    OwnComment,
}

pub struct VoteResult {
    pub comment: Placed,
    pub points: i32,
    pub outcome: Voted,
}

/// Gives (`up`) or takes back this user's one vote on a comment; the count moves in the same
/// transaction as the vote row, so it always equals the number of rows. `None`: no such comment.
pub fn vote(conn: &mut PgConnection, comment_id: i64, user_id: i64, up: bool) -> QueryResult<Option<VoteResult>> {
    conn.transaction(|conn| {
        let Some((placed, author, deleted, points)) = comments::table
            .find(comment_id)
            .select(((comments::id, comments::post_id, comments::path, comments::depth), comments::user_id, comments::deleted_at.is_not_null(), comments::upvotes))
            .first::<(Placed, i64, bool, i32)>(conn)
            .optional()?
        else {
            return Ok(None);
        };
        let unchanged = |outcome| Ok(Some(VoteResult { comment: placed.clone(), points, outcome }));
        if author == user_id {
            return unchanged(Voted::OwnComment);
        }
        if deleted {
            return unchanged(Voted::Unchanged);
        }
        let changed = if up {
            diesel::insert_into(comment_votes::table)
                .values((comment_votes::comment_id.eq(comment_id), comment_votes::user_id.eq(user_id)))
                .on_conflict_do_nothing()
                .execute(conn)?
        } else {
            diesel::delete(comment_votes::table.find((comment_id, user_id))).execute(conn)?
        } == 1;
        if !changed {
            return unchanged(Voted::Unchanged);
        }
        let step = if up { 1 } else { -1 };
        let points = diesel::update(comments::table.find(comment_id))
            .set((comments::upvotes.eq(comments::upvotes + step), comments::version.eq(comments::version + 1)))
            .returning(comments::upvotes)
            .get_result(conn)?;
        Ok(Some(VoteResult { comment: placed, points, outcome: Voted::Changed }))
    })
}

/// The comments of a post this user has upvoted.
pub fn votes_of(conn: &mut PgConnection, post_id: i64, user_id: i64) -> QueryResult<Vec<i64>> {
    comment_votes::table
        .inner_join(comments::table)
        .filter(comments::post_id.eq(post_id))
        .filter(comment_votes::user_id.eq(user_id))
        .select(comment_votes::comment_id)
        .load(conn)
}

pub fn create_post(conn: &mut PgConnection, user_id: i64, title: &str, body: &CommentBody) -> QueryResult<i64> {
    diesel::insert_into(posts::table)
        .values((posts::user_id.eq(user_id), posts::title.eq(title), posts::body.eq(body.as_str()), posts::body_html.eq(body.html())))
        .returning(posts::id)
        .get_result(conn)
}

#[derive(QueryableByName)]
struct Fixed {
    #[diesel(sql_type = BigInt)]
    post_id: i64,
}

/// Recomputes `children_count` and `comments_count` from the rows and fixes any that drifted.
/// Returns the posts whose pages changed.
pub fn reconcile_counters(conn: &mut PgConnection) -> QueryResult<Vec<i64>> {
    conn.transaction(|conn| {
        let children: Vec<Fixed> = diesel::sql_query(
            "UPDATE comments c SET children_count = actual.n, version = c.version + 1 \
             FROM (SELECT p.id, count(ch.id)::int AS n FROM comments p \
                   LEFT JOIN comments ch ON ch.parent_comment_id = p.id GROUP BY p.id) actual \
             WHERE c.id = actual.id AND c.children_count <> actual.n \
             RETURNING c.post_id",
        )
        .load(conn)?;
        let totals: Vec<Fixed> = diesel::sql_query(
            "UPDATE posts p SET comments_count = actual.n \
             FROM (SELECT p2.id, count(c.id)::int AS n FROM posts p2 \
                   LEFT JOIN comments c ON c.post_id = p2.id AND c.deleted_at IS NULL GROUP BY p2.id) actual \
             WHERE p.id = actual.id AND p.comments_count <> actual.n \
             RETURNING p.id AS post_id",
        )
        .load(conn)?;
        let mut changed: Vec<i64> = children.into_iter().chain(totals).map(|f| f.post_id).collect();
        changed.sort_unstable();
        changed.dedup();
        Ok(changed)
    })
}
