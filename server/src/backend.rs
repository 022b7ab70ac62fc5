//! The storage backend the handlers talk to: the local engine (the
//! default, one process over one directory) or the cluster backend
//! (stateless nodes over PostgreSQL and an S3-compatible store). Both
//! answer with the engine's types and errors; the local engine's blocking
//! calls run on tokio's blocking pool.

use std::collections::BTreeMap;

use partseal::{
    Committed, Completion, Engine, FileId, FileReader, FileSpec, Limits, Owner, PartInfo, PartPlan,
    Sha256, UploadMode, UploadStatus,
};
use partseal_cluster::{Cluster, ObjectReader};

use crate::error::ApiError;

/// One of the two backends.
#[derive(Clone)]
pub enum Backend {
    /// The local engine over a directory.
    Local(Engine),
    /// The cluster backend over PostgreSQL and an object store.
    Cluster(Cluster),
}

/// Runs blocking engine work off the async runtime.
pub async fn blocking<T, F>(engine: &Engine, f: F) -> Result<T, ApiError>
where
    F: FnOnce(Engine) -> Result<T, partseal::Error> + Send + 'static,
    T: Send + 'static,
{
    let engine = engine.clone();
    match tokio::task::spawn_blocking(move || f(engine)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("engine task failed: {e}"))),
    }
}

/// A committed file opened for download.
pub enum Download {
    /// A local file.
    Local(FileReader),
    /// An object in the store.
    Object(ObjectReader),
}

impl Download {
    /// The file's length.
    pub fn len(&self) -> u64 {
        match self {
            Download::Local(r) => r.len(),
            Download::Object(r) => r.len(),
        }
    }
    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The file's SHA-256.
    pub fn sha256(&self) -> Sha256 {
        match self {
            Download::Local(r) => r.sha256(),
            Download::Object(r) => r.sha256(),
        }
    }
}

impl Backend {
    /// The size limits every upload is held to.
    pub fn limits(&self) -> Limits {
        match self {
            Backend::Local(e) => e.config().limits,
            Backend::Cluster(c) => c.config().limits,
        }
    }

    /// The local engine, when that is the backend.
    pub fn local(&self) -> Option<&Engine> {
        match self {
            Backend::Local(e) => Some(e),
            Backend::Cluster(_) => None,
        }
    }

    /// See [`Engine::create`].
    pub async fn create(&self, owner: &Owner, spec: FileSpec) -> Result<FileId, ApiError> {
        match self {
            Backend::Local(e) => {
                let o = owner.clone();
                blocking(e, move |e| e.create(&o, spec)).await
            }
            Backend::Cluster(c) => Ok(c.create(owner, spec).await?),
        }
    }

    /// See [`Engine::plan_parts`].
    pub async fn plan_parts(
        &self,
        owner: &Owner,
        id: &FileId,
        plan: Vec<PartPlan>,
    ) -> Result<(), ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.plan_parts(&o, &i, &plan)).await
            }
            Backend::Cluster(c) => Ok(c.plan_parts(owner, id, &plan).await?),
        }
    }

    /// A committed file of `owner` with these bytes made into a new file
    /// with `labels` (a flash upload), if there is one.
    pub async fn flash_copy(
        &self,
        owner: &Owner,
        sha256: Sha256,
        length: u64,
        labels: BTreeMap<String, String>,
    ) -> Result<Option<FileId>, ApiError> {
        match self {
            Backend::Local(e) => {
                let o = owner.clone();
                blocking(e, move |e| match e.find_committed(&o, &sha256, length) {
                    Some(src) => e.create_from(&o, &src, labels).map(|(id, _)| Some(id)),
                    None => Ok(None),
                })
                .await
            }
            Backend::Cluster(c) => match c.find_committed(owner, &sha256, length).await? {
                Some(src) => Ok(Some(c.create_from(owner, &src, labels).await?.0)),
                None => Ok(None),
            },
        }
    }

    /// See [`Engine::get`].
    pub async fn get(&self, owner: &Owner, id: &FileId) -> Result<Committed, ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.get(&o, &i)).await
            }
            Backend::Cluster(c) => Ok(c.get(owner, id).await?),
        }
    }

    /// See [`Engine::abort_with_note`].
    pub async fn abort(
        &self,
        owner: &Owner,
        id: &FileId,
        note: Option<String>,
    ) -> Result<(), ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.abort_with_note(&o, &i, note.as_deref())).await
            }
            Backend::Cluster(c) => Ok(c.abort_with_note(owner, id, note.as_deref()).await?),
        }
    }

    /// See [`Engine::delete`].
    pub async fn delete(&self, owner: &Owner, id: &FileId) -> Result<(), partseal::Error> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                let e = e.clone();
                tokio::task::spawn_blocking(move || e.delete(&o, &i))
                    .await
                    .map_err(|e| partseal::Error::Io {
                        role: "engine task",
                        source: std::io::Error::other(e.to_string()),
                    })?
            }
            Backend::Cluster(c) => c.delete(owner, id).await,
        }
    }

    /// See [`Engine::parts`].
    pub async fn parts(&self, owner: &Owner, id: &FileId) -> Result<Vec<PartInfo>, ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.parts(&o, &i)).await
            }
            Backend::Cluster(c) => Ok(c.parts(owner, id).await?),
        }
    }

    /// See [`Engine::status`].
    pub async fn status(&self, owner: &Owner, id: &FileId) -> Result<UploadStatus, ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.status(&o, &i)).await
            }
            Backend::Cluster(c) => Ok(c.status(owner, id).await?),
        }
    }

    /// See [`Engine::upload_mode`].
    pub async fn upload_mode(
        &self,
        owner: &Owner,
        id: &FileId,
    ) -> Result<Option<UploadMode>, ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.upload_mode(&o, &i)).await
            }
            Backend::Cluster(c) => Ok(c.upload_mode(owner, id).await?),
        }
    }

    /// See [`Engine::complete`].
    pub async fn complete(
        &self,
        owner: &Owner,
        id: &FileId,
        expected: Option<Sha256>,
    ) -> Result<Completion, partseal::Error> {
        match self {
            Backend::Local(e) => {
                let (o, i, e) = (owner.clone(), id.clone(), e.clone());
                tokio::task::spawn_blocking(move || e.complete(&o, &i, expected))
                    .await
                    .map_err(|e| partseal::Error::Io {
                        role: "engine task",
                        source: std::io::Error::other(e.to_string()),
                    })?
            }
            Backend::Cluster(c) => c.complete(owner, id, expected).await,
        }
    }

    /// Opens a committed file for download.
    pub async fn open_file(&self, owner: &Owner, id: &FileId) -> Result<Download, ApiError> {
        match self {
            Backend::Local(e) => {
                let (o, i) = (owner.clone(), id.clone());
                blocking(e, move |e| e.open_file(&o, &i))
                    .await
                    .map(Download::Local)
            }
            Backend::Cluster(c) => Ok(Download::Object(c.open_file(owner, id).await?)),
        }
    }

    /// Open uploads, for the metrics; `None` when the count cannot be had.
    pub async fn open_upload_count(&self) -> Option<u64> {
        match self {
            Backend::Local(e) => Some(e.open_upload_count() as u64),
            Backend::Cluster(c) => c.open_upload_count().await.ok(),
        }
    }
}
