DROP TABLE chat_nodes;
DROP TABLE chat_epochs;
