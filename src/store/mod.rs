//! Object stores behind the core's `BlobStore` port: files under a
//! directory, or an S3 bucket.

mod file;
mod file_read;
mod s3;
mod s3_parts;

pub use file::FileStore;
pub use s3::S3Store;
