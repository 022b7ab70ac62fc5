//! The object store, through standard S3 calls only.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use partseal::{Error, Result};

use crate::ClusterConfig;

pub(crate) struct Store {
    client: Client,
    bucket: String,
}

/// What CompleteMultipartUpload answered.
pub(crate) enum Joined {
    /// The object exists now.
    Done,
    /// The store has no such multipart upload (completed or aborted before).
    NoSuchUpload,
    /// A listed part's ETag is not the store's: the part changed.
    InvalidPart(String),
}

/// An S3 failure as the engine reports it: no answer, a timeout or a 5xx is
/// [`Error::Unavailable`]; anything else is an I/O error of the object
/// store.
pub(crate) fn s3_err<E>(what: &'static str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unavailable = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => true,
        SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => e.raw_response().is_some_and(|r| r.status().as_u16() >= 500),
        _ => false,
    };
    let detail = match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        None => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    };
    if unavailable {
        Error::Unavailable(format!("object store, {what}: {detail}"))
    } else {
        Error::Io {
            role: "object store",
            source: std::io::Error::other(format!("{what}: {detail}")),
        }
    }
}

fn code_of<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(|s| s.code())
}

impl Store {
    pub(crate) fn new(cfg: &ClusterConfig) -> Store {
        let creds = Credentials::new(
            &cfg.s3_access_key_id,
            &cfg.s3_secret_access_key,
            None,
            None,
            "partseal",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&cfg.s3_endpoint)
            .region(Region::new(cfg.s3_region.clone()))
            .credentials_provider(creds)
            .force_path_style(true)
            // Parts are proven by their SHA-256 links, not by a checksum
            // the SDK would add as a trailer of a streamed body.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(cfg.timeout)
                    .read_timeout(cfg.timeout.max(Duration::from_secs(30)))
                    .build(),
            )
            .build();
        Store {
            client: Client::from_conf(conf),
            bucket: cfg.s3_bucket.clone(),
        }
    }

    pub(crate) async fn check_bucket(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| s3_err("HeadBucket", e))?;
        Ok(())
    }

    pub(crate) async fn create_multipart(&self, key: &str) -> Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("CreateMultipartUpload", e))?;
        out.upload_id.ok_or_else(|| {
            Error::Unavailable("object store: CreateMultipartUpload gave no id".into())
        })
    }

    pub(crate) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        n: u32,
        len: u64,
        body: ByteStream,
    ) -> Result<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n as i32)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| match code_of(&e) {
                // Joined or aborted meanwhile: the upload takes no parts.
                Some("NoSuchUpload") => Error::Conflict(
                    "the upload was completed or aborted while this part arrived".into(),
                ),
                _ => s3_err("UploadPart", e),
            })?;
        out.e_tag
            .ok_or_else(|| Error::Unavailable("object store: UploadPart gave no ETag".into()))
    }

    pub(crate) async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        n: u32,
        source_key: &str,
        start: u64,
        len: u64,
    ) -> Result<String> {
        let mut req = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(n as i32)
            .copy_source(format!("{}/{}", self.bucket, source_key));
        if len > 0 {
            req = req.copy_source_range(format!("bytes={}-{}", start, start + len - 1));
        }
        let out = req.send().await.map_err(|e| s3_err("UploadPartCopy", e))?;
        out.copy_part_result
            .and_then(|r| r.e_tag)
            .ok_or_else(|| Error::Unavailable("object store: UploadPartCopy gave no ETag".into()))
    }

    pub(crate) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
    ) -> Result<Joined> {
        let list = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|(n, etag)| {
                        CompletedPart::builder()
                            .part_number(*n as i32)
                            .e_tag(etag)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        match self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(list)
            .send()
            .await
        {
            Ok(_) => Ok(Joined::Done),
            Err(e) if code_of(&e) == Some("NoSuchUpload") => Ok(Joined::NoSuchUpload),
            Err(e) if matches!(code_of(&e), Some("InvalidPart" | "InvalidPartOrder")) => {
                let msg = e
                    .as_service_error()
                    .and_then(|s| s.message())
                    .unwrap_or("a part's ETag does not match")
                    .to_owned();
                Ok(Joined::InvalidPart(msg))
            }
            Err(e) => Err(s3_err("CompleteMultipartUpload", e)),
        }
    }

    /// Stores an empty object at `key` (an empty file's).
    pub(crate) async fn put_empty(&self, key: &str) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(0)
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .map_err(|e| s3_err("PutObject", e))?;
        Ok(())
    }

    /// Aborts a multipart upload; one that is gone already is not an error.
    pub(crate) async fn abort(&self, key: &str, upload_id: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(s3_err("AbortMultipartUpload", e)),
        }
    }

    /// The object's length, or `None` when there is no such object.
    pub(crate) async fn head(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if code_of(&e) == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(s3_err("HeadObject", e)),
        }
    }

    /// Bytes `start..start + len` of an object, as a stream.
    pub(crate) async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<ByteStream> {
        if len == 0 {
            return Ok(ByteStream::from_static(b""));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", start, start + len - 1))
            .send()
            .await
            .map_err(|e| s3_err("GetObject", e))?;
        Ok(out.body)
    }

    /// Deletes an object; one that is gone already is not an error.
    pub(crate) async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObject", e))?;
        Ok(())
    }

    /// Every multipart upload under `prefix`: key, upload id, when started.
    pub(crate) async fn list_multipart(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, Option<SystemTime>)>> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| s3_err("ListMultipartUploads", e))?;
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    let when = u.initiated().and_then(|t| SystemTime::try_from(*t).ok());
                    out.push((k.to_owned(), id.to_owned(), when));
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every object under `prefix`: key and when last written.
    pub(crate) async fn list_objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<SystemTime>)>> {
        let mut out = Vec::new();
        let mut token = None::<String>;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| s3_err("ListObjectsV2", e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    let when = o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    out.push((k.to_owned(), when));
                }
            }
            token = page.next_continuation_token().map(str::to_owned);
            if page.is_truncated() != Some(true) || token.is_none() {
                return Ok(out);
            }
        }
    }
}
