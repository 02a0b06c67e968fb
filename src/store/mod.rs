//! Object stores behind the core's `BlobStore` port: the file store now,
//! S3 when configured (a later step).

mod file;
mod file_read;

pub use file::FileStore;
