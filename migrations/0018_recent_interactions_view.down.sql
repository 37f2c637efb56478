DROP TABLE IF EXISTS {db}.recent_interactions_feed;
