//! Compiled plugins cached on disk, keyed by the component's digest and the engine's settings,
//! so a restart loads machine code instead of compiling again. Compilation only ever happens
//! when a plugin is loaded, never on the request path.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept.
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// A cache in `dir` for artifacts of `engine`.
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        // The engine's compatibility hash changes with the Wasmtime version and every setting
        // that affects machine code, so artifacts of another engine are never even opened.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    /// The component for `wasm` (whose sha256 is `digest`): from the cache if present and
    /// intact, otherwise compiled and stored.
    pub fn component(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if let Some(component) = self.load(engine, &path) {
            return Ok(component);
        }
        let artifact = engine.precompile_component(wasm)?;
        if let Err(error) = self.store(&path, &artifact) {
            tracing::warn!(path = %path.display(), %error, "cannot cache compiled plugin; it will be compiled again on restart");
        }
        self.deserialize(engine, &artifact)
    }

    fn load(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let artifact = std::fs::read(path).ok()?;
        let expected = std::fs::read_to_string(sidecar(path)).ok()?;
        if hex::encode(Sha256::digest(&artifact)) != expected.trim() {
            tracing::warn!(path = %path.display(), "cached compiled plugin is damaged; compiling again");
            return None;
        }
        match self.deserialize(engine, &artifact) {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cached compiled plugin is unusable; compiling again");
                None
            }
        }
    }

    #[allow(unsafe_code)]
    fn deserialize(&self, engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: `artifact` is machine code that this process produced with
        // `precompile_component`, either just now or earlier, written to the host's own data
        // directory and checked against the sha256 recorded beside it when it was written.
        // Wasmtime additionally checks that it was compiled by a compatible engine.
        unsafe { Component::deserialize(engine, artifact) }
    }

    fn store(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Write under a unique temporary name and rename, so a crash never leaves half a file
        // under the real name and hosts sharing the cache never write into each other's file.
        // The checksum goes first: an artifact is only trusted once its checksum matches.
        write_atomically(
            &self.dir,
            &sidecar(path),
            hex::encode(Sha256::digest(artifact)).as_bytes(),
        )?;
        write_atomically(&self.dir, path, artifact)
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn sidecar(path: &Path) -> PathBuf {
    path.with_extension("cwasm.sha256")
}
