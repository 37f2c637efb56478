DROP TABLE IF EXISTS {db}.daily_stats;
DROP TABLE IF EXISTS {db}.repo_state;
DROP TABLE IF EXISTS {db}.repo_cleanup_jobs;
DROP TABLE IF EXISTS {db}.api_keys;
DROP TABLE IF EXISTS {db}.actor_labels;
DROP TABLE IF EXISTS {db}.accounts;
DROP TABLE IF EXISTS {db}.identities;
DROP TABLE IF EXISTS {db}.records;
