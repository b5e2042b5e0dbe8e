DROP TABLE comment_votes;
DROP TABLE comments;
DROP TABLE posts;
