DROP TABLE duplicate_reviews;
