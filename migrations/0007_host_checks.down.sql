DROP TABLE IF EXISTS {db}.host_checks;
