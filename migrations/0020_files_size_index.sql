-- Before sealing, the batcher asks for every ready file whether a file of the same size is
-- already in the dataset (only such a file is hashed early, to find repeated content). Without
-- this index that question read every row of the dataset, so sealing N queued files cost N x N
-- row reads (B1 in bench/RESULTS.md). Covering: the answer comes from the index alone.
CREATE INDEX files_size ON files (dataset, size, state);
