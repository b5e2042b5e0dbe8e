DROP TABLE chat_applications;
