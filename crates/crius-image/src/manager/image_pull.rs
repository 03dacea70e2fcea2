//! `pull`: fetch an image and record it, moving its tag from any older image.

use crate::config::PullAuth;
use crate::error::Result;
use crate::manager::ImageManager;
use crate::manifest;
use crate::pull::Unpacked;
use crate::records::Image;
use crate::reference::ImageRef;

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct PullResult {
    /// The image now recorded; `image.id` is the CRI image ref.
    pub image: Image,
    /// Layers this pull fetched from the network (0 when everything was present).
    pub layers_downloaded: usize,
    /// Compressed bytes fetched.
    pub bytes_downloaded: u64,
}

impl ImageManager {
    /// Pulls `reference` (normalised like crictl) and records the image. Concurrent
    /// pulls of the same reference run one after the other, so the second finds every
    /// layer present and downloads nothing.
    ///
    /// ```no_run
    /// # async fn f(m: &crius_image::ImageManager) -> crius_image::Result<()> {
    /// let pulled = m.pull("busybox", &Default::default()).await?;
    /// println!("{}", pulled.image.id);
    /// # Ok(()) }
    /// ```
    pub async fn pull(&self, reference: &str, auth: &PullAuth) -> Result<PullResult> {
        let image = ImageRef::parse(reference)?;
        let auth = auth.or_configured(&self.unpacker.config, &image.registry);
        auth.to_registry_auth()?; // a malformed `auth` is the caller's error, before any I/O
        let _one_at_a_time = self.pulls.lock(&format!("pull:{image}")).await;
        let lease = self.leases.acquire();
        tracing::debug!(image = %image, "pulling image");
        let unpacked = self.unpacker.pull(&image, auth, &lease).await?;
        let recorded = self.record(Some(&image), true, &unpacked)?;
        tracing::info!(image = %image, id = %recorded.id, layers_downloaded = unpacked.layers_downloaded, "image pulled");
        Ok(PullResult {
            image: recorded,
            layers_downloaded: unpacked.layers_downloaded,
            bytes_downloaded: unpacked.bytes_downloaded,
        })
    }

    /// Writes the image record for `unpacked`, named by `image` (its tag, and its repo
    /// digest when `with_digest`), in one transaction that also takes the tag away from
    /// any other image.
    pub(crate) fn record(
        &self,
        image: Option<&ImageRef>,
        with_digest: bool,
        unpacked: &Unpacked,
    ) -> Result<Image> {
        let (doc, config) = manifest::parse_config(&unpacked.config)?;
        let _g = self.records_lock.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.records.list()?;
        let tag = image.and_then(ImageRef::repo_tag);
        let digest_ref = image
            .filter(|_| with_digest)
            .map(|i| i.repo_digest(&unpacked.top_digest));
        let mut new = all
            .iter()
            .find(|i| i.id == unpacked.config_digest)
            .cloned()
            .unwrap_or(Image {
                id: unpacked.config_digest.clone(),
                repo_tags: vec![],
                repo_digests: vec![],
                size: unpacked.size,
                manifest_digest: unpacked.manifest_digest.clone(),
                chain_ids: unpacked.chain_ids.clone(),
                config,
                username: doc.config.map(|c| c.user).unwrap_or_default(),
                pinned: false,
            });
        let (mut puts, mut deletes) = (Vec::new(), Vec::new());
        for other in all.iter().filter(|i| i.id != new.id) {
            let mut o = other.clone();
            o.repo_tags.retain(|t| Some(t) != tag.as_ref());
            o.repo_digests.retain(|d| Some(d) != digest_ref.as_ref());
            if o == *other {
                continue;
            }
            if o.repo_tags.is_empty() && o.repo_digests.is_empty() {
                deletes.push(o.id);
            } else {
                puts.push(o);
            }
        }
        if let Some(t) = tag {
            if !new.repo_tags.contains(&t) {
                new.repo_tags.push(t);
            }
        }
        if let Some(d) = digest_ref {
            if !new.repo_digests.contains(&d) {
                new.repo_digests.push(d);
            }
        }
        puts.push(new.clone());
        self.records.apply(&puts, &deletes)?;
        Ok(new)
    }
}
