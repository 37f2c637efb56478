ALTER TABLE {db}.posts DROP INDEX IF EXISTS posts_tags;
ALTER TABLE {db}.posts DROP INDEX IF EXISTS posts_text_tokens;
