//! A local, on-disk emulator of the platform's Batch Ingestion, Catalog and Data Access APIs.
//! (Stub: being written.)
