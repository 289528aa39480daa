//! OCI image archives written from files on this machine, with no registry, no base image and no container
//! engine: one gzipped layer holding exactly the files given, a config, a manifest, an `index.json` and a
//! `manifest.json`, in one tar.
//!
//! The archive is what `docker save` writes since Docker 25, so every common loader takes it as it is:
//! `docker load` (reads `manifest.json`), `ctr images import` (reads `index.json` and names the image from its
//! `io.containerd.image.name` annotation) and `skopeo copy oci-archive:...` (an OCI image layout). Everything in
//! it has a fixed owner (root) and time (the Unix epoch), so the same files give the same image digest on every
//! build; only what changed makes a new image.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flate2::Compression;
use flate2::write::GzEncoder;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder,
    SCHEMA_VERSION, Sha256Digest,
};

use crate::{HarnessError, Result, io_err};

/// The `created` time of every image: the epoch, so that a rebuild of the same files is the same image.
const CREATED: &str = "1970-01-01T00:00:00Z";

/// What one path in the image is.
#[derive(Debug, Clone)]
enum Content {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// An image to write: its name, its files and how a container runs it.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    reference: String,
    entries: BTreeMap<String, (Content, u32)>,
    user: Option<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: Option<String>,
    labels: BTreeMap<String, String>,
}

/// What [`ImageSpec::write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The image's name, `repository:tag`.
    pub reference: String,
    /// The manifest's digest (`sha256:...`): what a registry and containerd call the image by.
    pub manifest_digest: String,
    /// The config's digest: the image ID `docker images` and `crictl images` show.
    pub config_digest: String,
    /// Bytes of the compressed layer (what a pull downloads).
    pub layer_size: u64,
    /// Bytes of the uncompressed layer (what it takes on a node's disk).
    pub unpacked_size: u64,
    /// Bytes of the archive file.
    pub archive_size: u64,
}

impl ImageSpec {
    /// An empty image called `reference` (`repository:tag`; a reference without a tag is `:latest`).
    pub fn new(reference: &str) -> Self {
        let reference = if split_reference(reference).1.is_empty() {
            format!("{reference}:latest")
        } else {
            reference.to_owned()
        };
        Self {
            reference,
            entries: BTreeMap::new(),
            user: None,
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            workdir: None,
            labels: BTreeMap::new(),
        }
    }

    /// Adds the file at `source` as `path` (absolute, in the image) with permission bits `mode`; the
    /// directories above it are added as root-owned 0755.
    pub fn file(mut self, source: &Path, path: &str, mode: u32) -> Self {
        self.entries.insert(
            normalise(path),
            (Content::File(source.to_owned()), mode & 0o7777),
        );
        self
    }

    /// Adds `bytes` as the file `path` with permission bits `mode`.
    pub fn bytes(mut self, bytes: &[u8], path: &str, mode: u32) -> Self {
        self.entries.insert(
            normalise(path),
            (Content::Bytes(bytes.to_vec()), mode & 0o7777),
        );
        self
    }

    /// Adds the directory `path` with permission bits `mode` (e.g. 0o1777 for a `/tmp`).
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries
            .insert(normalise(path), (Content::Dir, mode & 0o7777));
        self
    }

    /// The user (`uid:gid`) a container runs as unless its spec says otherwise.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// The program a container runs.
    pub fn entrypoint(mut self, argv: &[&str]) -> Self {
        self.entrypoint = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Default arguments to the entrypoint.
    pub fn cmd(mut self, argv: &[&str]) -> Self {
        self.cmd = argv.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// An environment variable (`NAME=value`) every container gets.
    pub fn env(mut self, variable: &str) -> Self {
        self.env.push(variable.to_owned());
        self
    }

    /// The working directory of a container.
    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_owned());
        self
    }

    /// A label on the image config (`org.opencontainers.image.*` and the like).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The image's name, `repository:tag`.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Writes the archive to `out` (through a temporary file beside it, so a reader never sees half an
    /// archive) and returns its digests and sizes.
    pub fn write(&self, out: &Path) -> Result<Written> {
        let (layer_tar, unpacked_size) = self.layer()?;
        let diff_id = sha256(&layer_tar);
        let layer = gzip(&layer_tar)?;
        let layer_digest = sha256(&layer);

        let mut config = ConfigBuilder::default();
        if let Some(user) = &self.user {
            config = config.user(user.clone());
        }
        if !self.entrypoint.is_empty() {
            config = config.entrypoint(self.entrypoint.clone());
        }
        if !self.cmd.is_empty() {
            config = config.cmd(self.cmd.clone());
        }
        if !self.env.is_empty() {
            config = config.env(self.env.clone());
        }
        if let Some(dir) = &self.workdir {
            config = config.working_dir(dir.clone());
        }
        if !self.labels.is_empty() {
            config = config.labels(
                self.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<_, _>>(),
            );
        }
        let config = ImageConfigurationBuilder::default()
            .created(CREATED)
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(config.build().map_err(spec_error)?)
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![format!("sha256:{diff_id}")])
                    .build()
                    .map_err(spec_error)?,
            )
            .history(vec![
                HistoryBuilder::default()
                    .created(CREATED)
                    .created_by("groundwork integration-tests oci (files copied in)")
                    .build()
                    .map_err(spec_error)?,
            ])
            .build()
            .map_err(spec_error)?;
        let config = canonical(&config.to_string().map_err(spec_error)?)?;
        let config_digest = sha256(&config);

        let manifest = ImageManifestBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, &config_digest, &config)?)
            .layers(vec![descriptor(
                MediaType::ImageLayerGzip,
                &layer_digest,
                &layer,
            )?])
            .build()
            .map_err(spec_error)?;
        let manifest = canonical(&manifest.to_string().map_err(spec_error)?)?;
        let manifest_digest = sha256(&manifest);

        let (_, tag) = split_reference(&self.reference);
        let annotations = HashMap::from([
            // containerd (ctr images import, and docker load since 25) names the image from this one...
            (
                "io.containerd.image.name".to_owned(),
                self.reference.clone(),
            ),
            // ...skopeo and the OCI layout spec from this one, a tag.
            (
                "org.opencontainers.image.ref.name".to_owned(),
                tag.to_owned(),
            ),
        ]);
        let index = ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![
                DescriptorBuilder::default()
                    .media_type(MediaType::ImageManifest)
                    .digest(digest(&manifest_digest)?)
                    .size(manifest.len() as u64)
                    .annotations(annotations)
                    .build()
                    .map_err(spec_error)?,
            ])
            .build()
            .map_err(spec_error)?;
        let index = canonical(&index.to_string().map_err(spec_error)?)?;
        let layout = OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()
            .map_err(spec_error)?
            .to_string()
            .map_err(spec_error)?
            .into_bytes();
        // docker load before Docker 25 reads only this file.
        let docker_manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": format!("blobs/sha256/{config_digest}"),
            "RepoTags": [self.reference],
            "Layers": [format!("blobs/sha256/{layer_digest}")],
        }]))
        .map_err(|e| HarnessError::Setup(format!("docker manifest: {e}")))?;

        let mut archive = tar::Builder::new(Vec::new());
        for dir in ["blobs", "blobs/sha256"] {
            append(&mut archive, dir, tar::EntryType::Directory, 0o755, &[])?;
        }
        for (digest, bytes) in [
            (&layer_digest, &layer),
            (&config_digest, &config),
            (&manifest_digest, &manifest),
        ] {
            append(
                &mut archive,
                &format!("blobs/sha256/{digest}"),
                tar::EntryType::Regular,
                0o644,
                bytes,
            )?;
        }
        for (name, bytes) in [
            ("oci-layout", &layout),
            ("index.json", &index),
            ("manifest.json", &docker_manifest),
        ] {
            append(&mut archive, name, tar::EntryType::Regular, 0o644, bytes)?;
        }
        let archive = archive
            .into_inner()
            .map_err(io_err("finishing the image archive"))?;

        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("creating {}", parent.display())))?;
        }
        let partial = out.with_extension("tar.partial");
        std::fs::write(&partial, &archive)
            .map_err(io_err(format!("writing {}", partial.display())))?;
        std::fs::rename(&partial, out).map_err(io_err(format!(
            "renaming {} to {}",
            partial.display(),
            out.display()
        )))?;
        Ok(Written {
            reference: self.reference.clone(),
            manifest_digest: format!("sha256:{manifest_digest}"),
            config_digest: format!("sha256:{config_digest}"),
            layer_size: layer.len() as u64,
            unpacked_size,
            archive_size: archive.len() as u64,
        })
    }

    /// The layer as an uncompressed tar, every parent directory first, and its content's size.
    fn layer(&self) -> Result<(Vec<u8>, u64)> {
        let mut all: BTreeMap<String, (Content, u32)> = BTreeMap::new();
        for (path, entry) in &self.entries {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                all.entry(dir.display().to_string())
                    .or_insert((Content::Dir, 0o755));
                parent = dir.parent();
            }
            all.insert(path.clone(), entry.clone());
        }
        let mut layer = tar::Builder::new(Vec::new());
        let mut size = 0u64;
        for (path, (content, mode)) in &all {
            match content {
                Content::Dir => append(&mut layer, path, tar::EntryType::Directory, *mode, &[])?,
                Content::File(source) => {
                    let bytes = std::fs::read(source).map_err(io_err(format!(
                        "reading {} for the image",
                        source.display()
                    )))?;
                    size += bytes.len() as u64;
                    append(&mut layer, path, tar::EntryType::Regular, *mode, &bytes)?;
                }
                Content::Bytes(bytes) => {
                    size += bytes.len() as u64;
                    append(&mut layer, path, tar::EntryType::Regular, *mode, bytes)?;
                }
            }
        }
        let tar = layer
            .into_inner()
            .map_err(io_err("finishing the image layer"))?;
        Ok((tar, size))
    }
}

/// The name (`repository:tag`) of the image in an archive written by [`ImageSpec::write`] (or `docker save`):
/// its `index.json`'s `io.containerd.image.name` annotation.
pub fn archive_reference(archive: &Path) -> Result<String> {
    let file =
        std::fs::File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries()
        .map_err(io_err(format!("reading {}", archive.display())))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(format!("reading {}", archive.display())))?;
        let is_index = entry.path().is_ok_and(|p| p == Path::new("index.json"));
        if is_index {
            let index: serde_json::Value = serde_json::from_reader(&mut entry).map_err(|e| {
                HarnessError::Setup(format!("{}: index.json: {e}", archive.display()))
            })?;
            return index["manifests"][0]["annotations"]["io.containerd.image.name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    HarnessError::Setup(format!(
                        "{}: index.json names no image (io.containerd.image.name)",
                        archive.display()
                    ))
                });
        }
    }
    Err(HarnessError::Setup(format!(
        "{} has no index.json: not an OCI image archive",
        archive.display()
    )))
}

/// `repository:tag` split at the tag's colon (a colon before the last `/` is a registry's port).
pub fn split_reference(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, ""),
    }
}

/// An image path without its leading `/` (tar members are relative), `/usr/local/bin/x` -> `usr/local/bin/x`.
fn normalise(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_owned()
}

/// Appends one member owned by root with the epoch as its time.
fn append(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    bytes: &[u8],
) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(bytes.len() as u64);
    let name = if kind == tar::EntryType::Directory {
        format!("{path}/")
    } else {
        path.to_owned()
    };
    builder
        .append_data(&mut header, &name, bytes)
        .map_err(io_err(format!("adding {name} to an image archive")))
}

/// `json` with every object's keys sorted: oci-spec keeps labels and annotations in `HashMap`s, whose order
/// changes from run to run, and a digest must not.
fn canonical(json: &str) -> Result<Vec<u8>> {
    fn sort(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sort(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(spec_error)?;
    serde_json::to_vec(&sort(value)).map_err(spec_error)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    // flate2 writes a zero mtime and no file name, so the same tar always gives the same bytes.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder
        .write_all(bytes)
        .map_err(io_err("compressing an image layer"))?;
    encoder
        .finish()
        .map_err(io_err("compressing an image layer"))
}

/// The lowercase hex SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(hex: &str) -> Result<Sha256Digest> {
    Sha256Digest::from_str(hex).map_err(spec_error)
}

fn descriptor(media_type: MediaType, hex: &str, bytes: &[u8]) -> Result<Descriptor> {
    Ok(Descriptor::new(
        media_type,
        bytes.len() as u64,
        digest(hex)?,
    ))
}

fn spec_error(error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup(format!("building an OCI image document: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_at_a_registry_port() {
        assert_eq!(
            split_reference("ghcr.io/groundwork/groundwork:0.1.0"),
            ("ghcr.io/groundwork/groundwork", "0.1.0")
        );
        assert_eq!(
            split_reference("localhost:5000/groundwork:dev"),
            ("localhost:5000/groundwork", "dev")
        );
        assert_eq!(
            split_reference("localhost:5000/groundwork"),
            ("localhost:5000/groundwork", "")
        );
        assert_eq!(
            ImageSpec::new("localhost:5000/groundwork").reference(),
            "localhost:5000/groundwork:latest"
        );
    }

    #[test]
    fn the_same_files_give_the_same_image_and_a_changed_file_another() {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = dir.path().join("daemon");
        std::fs::write(&binary, b"\x7fELF not really").expect("write");
        let spec = || {
            ImageSpec::new("example.test/one:1")
                .file(&binary, "/usr/local/bin/daemon", 0o755)
                .user("65532:65532")
                .label("org.opencontainers.image.version", "1")
                .label("org.opencontainers.image.title", "one")
                .label("org.opencontainers.image.source", "here")
        };
        let first = spec().write(&dir.path().join("a.tar")).expect("write a");
        let second = spec().write(&dir.path().join("b.tar")).expect("write b");
        assert_eq!(first, second);
        assert_eq!(
            std::fs::read(dir.path().join("a.tar")).expect("read a"),
            std::fs::read(dir.path().join("b.tar")).expect("read b"),
        );
        std::fs::write(&binary, b"\x7fELF changed").expect("write");
        let third = spec().write(&dir.path().join("c.tar")).expect("write c");
        assert_ne!(first.manifest_digest, third.manifest_digest);
        assert_eq!(
            archive_reference(&dir.path().join("c.tar")).expect("reference"),
            "example.test/one:1"
        );
    }

    #[test]
    fn the_layer_holds_the_files_under_their_directories_owned_by_root() {
        let (tar, size) = ImageSpec::new("example.test/two:1")
            .bytes(b"hello", "/www/index.html", 0o644)
            .dir("/tmp", 0o1777)
            .layer()
            .expect("layer");
        assert_eq!(size, 5);
        let mut archive = tar::Archive::new(tar.as_slice());
        let members: Vec<(String, u32, u64)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let header = e.header();
                (
                    e.path().expect("path").display().to_string(),
                    header.mode().expect("mode"),
                    header.uid().expect("uid"),
                )
            })
            .collect();
        assert_eq!(
            members,
            [
                ("tmp/".to_owned(), 0o1777, 0),
                ("www/".to_owned(), 0o755, 0),
                ("www/index.html".to_owned(), 0o644, 0),
            ]
        );
    }
}
