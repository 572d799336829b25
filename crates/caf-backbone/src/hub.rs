//! Files from the Hugging Face Hub, through hf-hub's cache.

use std::path::PathBuf;

use hf_hub::{HFClient, HFClientSync, HFError};

use crate::error::{Error, Result};

/// How to reach the Hub. The defaults follow hf-hub and the Python client:
/// the cache is `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`; `HF_HUB_OFFLINE=1` forbids network access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubOptions {
    /// Cache directory (hf-hub layout); `None` resolves it from the environment.
    pub cache_dir: Option<PathBuf>,
    /// Resolve from the cache only, never touching the network.
    pub offline: bool,
}

impl HubOptions {
    /// Options from the environment (`HF_HUB_OFFLINE`; the cache is resolved by hf-hub).
    pub fn from_env() -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
            .unwrap_or(false);
        Self {
            cache_dir: None,
            offline,
        }
    }
}

/// A file in a Hub model repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    pub file: String,
    /// Branch, tag or commit; `main` when `None`.
    pub revision: Option<String>,
}

impl HubFile {
    /// Local path of the file, from the cache or (when online) downloaded into it.
    pub fn resolve(&self, options: &HubOptions) -> Result<PathBuf> {
        let revision = self.revision.clone().unwrap_or_else(|| "main".to_string());
        let fail = |message: String| Error::Hub {
            repo: self.repo.clone(),
            file: self.file.clone(),
            revision: revision.clone(),
            message,
        };
        let Some((owner, name)) = self.repo.split_once('/') else {
            return Err(fail("the repository id must look like `owner/name`".to_string()));
        };
        let mut builder = HFClient::builder();
        if let Some(dir) = &options.cache_dir {
            builder = builder.cache_dir(dir);
        }
        let client = builder
            .build()
            .map_err(|e| fail(format!("cannot create the Hub client: {e}")))?;
        let cache_dir = client.cache_dir().to_path_buf();
        let client =
            HFClientSync::from_inner(client).map_err(|e| fail(format!("cannot create the Hub client: {e}")))?;
        let result = client
            .model(owner, name)
            .download_file()
            .filename(self.file.clone())
            .revision(revision.clone())
            .local_files_only(options.offline)
            .send();
        result.map_err(|e| match e {
            HFError::LocalEntryNotFound { .. } => fail(format!(
                "not in the cache at {} and offline mode is on (HF_HUB_OFFLINE); download it once with \
                 `huggingface-cli download {} {}` or point HF_HOME / HF_HUB_CACHE at a cache that has it",
                cache_dir.display(),
                self.repo,
                self.file
            )),
            other => fail(format!("{other} (cache: {})", cache_dir.display())),
        })
    }
}
