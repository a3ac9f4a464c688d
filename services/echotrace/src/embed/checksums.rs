//! The model files are pinned: before the embedder loads a file, it checks its SHA-256 against the
//! `SHA256SUMS` beside it (or one folder up, as the static encoder's files are listed), so a file
//! swapped or corrupted since it was exported stops start-up with its name rather than running.
//! (`embed.verify_checksums = false` turns the check off for a model under development.)

use super::EmbedError;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Fails unless `path`'s SHA-256 is the one its `SHA256SUMS` lists.
pub fn verify(path: &Path) -> Result<(), EmbedError> {
    let refuse = |reason: String| EmbedError::Model { path: path.to_owned(), reason };
    let (folder, sums) = path
        .ancestors()
        .skip(1)
        .take(2)
        .find_map(|folder| std::fs::read_to_string(folder.join("SHA256SUMS")).ok().map(|sums| (folder, sums)))
        .ok_or_else(|| {
            refuse("no SHA256SUMS beside it to check it against: list it there (sha256sum FILE >> SHA256SUMS), or set embed.verify_checksums = false".into())
        })?;
    let name = path.strip_prefix(folder).expect("an ancestor").to_string_lossy().replace('\\', "/");
    let expected = sums
        .lines()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .find(|(_, file)| file.trim_start().trim_start_matches('*') == name)
        .map(|(digest, _)| digest.to_ascii_lowercase())
        .ok_or_else(|| refuse(format!("not listed in {}", folder.join("SHA256SUMS").display())))?;
    let actual = sha256(path).map_err(|error| refuse(error.to_string()))?;
    if actual != expected {
        return Err(refuse(format!(
            "its SHA-256 is {actual} but {} says {expected}: the file was changed or corrupted",
            folder.join("SHA256SUMS").display()
        )));
    }
    Ok(())
}

/// The file's SHA-256, in lower-case hex.
fn sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_must_match_its_listed_digest() {
        const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        const WEIGHTS: &str = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c";
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("static")).unwrap();
        let (model, inner) = (dir.path().join("model.onnx"), dir.path().join("static/table.bin"));
        std::fs::write(&model, b"weights").unwrap();
        std::fs::write(&inner, b"").unwrap();
        assert!(verify(&model).unwrap_err().to_string().contains("no SHA256SUMS"));
        let sums = |model_digest: &str| format!("{model_digest}  model.onnx\n{EMPTY} *static/table.bin\n");
        std::fs::write(dir.path().join("SHA256SUMS"), sums(WEIGHTS)).unwrap();
        assert!(verify(&model).is_ok());
        assert!(verify(&inner).is_ok(), "listed one folder up, in binary mode");
        std::fs::write(&model, b"weights, swapped").unwrap();
        let error = verify(&model).unwrap_err().to_string();
        assert!(error.contains("changed or corrupted") && error.contains(WEIGHTS), "{error}");
        std::fs::write(dir.path().join("SHA256SUMS"), format!("{EMPTY}  other.onnx\n")).unwrap();
        assert!(verify(&model).unwrap_err().to_string().contains("not listed"));
    }
}
