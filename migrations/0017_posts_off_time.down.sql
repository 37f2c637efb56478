DROP TABLE IF EXISTS {db}.posts_off_time_feed;
DROP TABLE IF EXISTS {db}.posts_off_time;
