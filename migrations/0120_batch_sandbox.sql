-- The sandbox a batch was created in (issue #21: a watch may name its own sandbox). Every
-- later call about the batch must carry the same x-sandbox-name, even if the watch's sandbox
-- changes in the config meanwhile. NULL: sealed before batches recorded it, which means the
-- [platform] sandbox (the only one there was).
ALTER TABLE batches ADD COLUMN sandbox TEXT;
