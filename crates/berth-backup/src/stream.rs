//! The byte pipelines: dump -> zstd (multithreaded) -> [age] -> sha256 -> file, and back.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::BackupError;

/// Counts and hashes what passes through to the file.
pub struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    pub bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts what is read and reports progress.
pub struct CountingReader<'a, R> {
    pub inner: R,
    pub bytes: u64,
    pub progress: &'a dyn berth_cmd::progress::Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.progress.bytes(self.bytes);
        Ok(n)
    }
}

/// Create `path` for writing with mode 0600 (refusing to follow an existing file).
pub fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// `dir/.name.partial`: where a file is written before it is renamed into place.
pub fn partial_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.partial"))
}

/// Write `contents` to `path` atomically (temp file + rename), mode 0600.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("record");
    let tmp = partial_path(dir, name);
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = create_private(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Parse age recipients (public keys).
pub fn recipients(keys: &[String]) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    keys.iter()
        .map(|k| {
            k.parse::<age::x25519::Recipient>().map_err(|e| {
                BackupError::Config(format!(
                    "backup recipient `{k}` is not an age public key: {e}"
                ))
            })
        })
        .collect()
}

/// Where the encoded stream goes: the file, through sha256, maybe through age.
pub enum Sink {
    Plain(HashWriter<File>),
    Age(age::stream::StreamWriter<HashWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

/// What an encode wrote.
pub struct Encoded {
    pub file_bytes: u64,
    pub sha256: String,
}

/// A compressing (and maybe encrypting) writer into `file`.
pub struct Encoder {
    z: zstd::stream::write::Encoder<'static, Sink>,
}

impl Encoder {
    pub fn new(
        file: File,
        level: i32,
        threads: u32,
        recipients: &[age::x25519::Recipient],
    ) -> Result<Self, BackupError> {
        let hw = HashWriter {
            inner: file,
            hash: Sha256::new(),
            bytes: 0,
        };
        let sink = if recipients.is_empty() {
            Sink::Plain(hw)
        } else {
            let enc = age::Encryptor::with_recipients(
                recipients.iter().map(|r| r as &dyn age::Recipient),
            )
            .map_err(|e| BackupError::Failed(format!("could not set up encryption: {e}")))?;
            Sink::Age(enc.wrap_output(hw).map_err(io_failed("start encryption"))?)
        };
        let mut z = zstd::stream::write::Encoder::new(sink, level)
            .map_err(io_failed("start compression"))?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
        } else {
            threads
        };
        if threads > 1 {
            z.multithread(threads)
                .map_err(io_failed("start compression threads"))?;
        }
        z.include_checksum(true)
            .map_err(io_failed("start compression"))?;
        Ok(Self { z })
    }

    /// Finish the stream, sync the file and return its size and checksum.
    pub fn finish(self) -> io::Result<Encoded> {
        let hw = match self.z.finish()? {
            Sink::Plain(w) => w,
            Sink::Age(w) => w.finish()?,
        };
        hw.inner.sync_all()?;
        Ok(Encoded {
            file_bytes: hw.bytes,
            sha256: hex(&hw.hash.finalize()),
        })
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.z.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.z.flush()
    }
}

pub fn io_failed(action: &'static str) -> impl Fn(io::Error) -> BackupError {
    move |e| BackupError::Failed(format!("could not {action}: {e}"))
}

/// Like [`io_failed`], naming the file: `could not <action> <path>: <error>` (a full
/// disk says where).
pub fn io_failed_at(
    action: &'static str,
    path: &Path,
) -> impl Fn(io::Error) -> BackupError + use<> {
    let path = path.display().to_string();
    move |e| BackupError::Failed(format!("could not {action} {path}: {e}"))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Load age identities from a file (`age-keygen` output).
pub fn identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>, BackupError> {
    let f = age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
        BackupError::Config(format!(
            "could not read the age identity file {}: {e}",
            path.display()
        ))
    })?;
    f.into_identities().map_err(|e| {
        BackupError::Config(format!(
            "{} holds no usable age identity: {e}",
            path.display()
        ))
    })
}

/// A reader of the plain stream inside a backup file (decrypting when needed).
pub fn decoder(
    path: &Path,
    encrypted: bool,
    identities: &[Box<dyn age::Identity>],
) -> Result<Box<dyn Read>, BackupError> {
    let f = BufReader::with_capacity(
        1 << 20,
        File::open(path)
            .map_err(|e| BackupError::Failed(format!("could not open {}: {e}", path.display())))?,
    );
    decoder_of(Box::new(f), path, encrypted, identities)
}

/// The bytes of a file, read (and hashed) by a thread of their own: the reader
/// gets them through a bounded channel, so hashing overlaps what reads them.
pub struct HashingReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the file ended
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Read `path` on a thread that hashes every byte (sha256, hex) and hands the bytes
/// to the returned reader. The thread reads and hashes the whole file even when the
/// reader stops early or is dropped; join it for the digest.
pub fn hashing_reader(
    path: &Path,
) -> io::Result<(HashingReader, std::thread::JoinHandle<io::Result<String>>)> {
    let mut f = File::open(path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    let hasher = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut listening = true;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = e.kind();
                    let msg = e.to_string();
                    if listening {
                        let _ = tx.send(Err(e));
                    }
                    return Err(io::Error::new(kind, msg));
                }
            };
            if n == 0 {
                return Ok(hex(&h.finalize()));
            }
            buf.truncate(n);
            h.update(&buf);
            if listening && tx.send(Ok(buf)).is_err() {
                listening = false;
            }
        }
    });
    Ok((
        HashingReader {
            rx,
            chunk: Vec::new(),
            at: 0,
        },
        hasher,
    ))
}

/// [`decoder`] over bytes already opened (`path` names them in errors).
pub fn decoder_of(
    f: Box<dyn Read>,
    path: &Path,
    encrypted: bool,
    identities: &[Box<dyn age::Identity>],
) -> Result<Box<dyn Read>, BackupError> {
    let inner: Box<dyn Read> = if encrypted {
        if identities.is_empty() {
            return Err(BackupError::Config(format!(
                "{} is encrypted: pass the age identity with --identity FILE (or BERTH_AGE_IDENTITY)",
                path.display()
            )));
        }
        let d = age::Decryptor::new(f).map_err(|e| {
            BackupError::Failed(format!("{} is not a valid age file: {e}", path.display()))
        })?;
        Box::new(
            d.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
                .map_err(|e| {
                    BackupError::Failed(format!(
                        "could not decrypt {} with the given identity: {e}",
                        path.display()
                    ))
                })?,
        )
    } else {
        Box::new(f)
    };
    let z = zstd::stream::read::Decoder::new(inner).map_err(io_failed("start decompression"))?;
    Ok(Box::new(z))
}

/// Copy `input` to `out` through 1 MiB buffers, the writes on a thread of their own:
/// decompressing (in `input`) and copying into the page cache (the writes) overlap,
/// in few large system calls. Returns the bytes copied; a read error says so as
/// `Err((true, e))`, a write error as `Err((false, e))`.
pub fn copy_pipelined(mut input: impl Read, out: &mut File) -> Result<u64, (bool, io::Error)> {
    const CHUNK: usize = 1 << 20;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<u64> {
            let mut n = 0u64;
            for buf in full_rx {
                out.write_all(&buf)?;
                n += buf.len() as u64;
                let _ = empty_tx.send(buf);
            }
            Ok(n)
        });
        let read = (|| -> io::Result<()> {
            loop {
                let mut buf = empty_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.resize(CHUNK, 0);
                // Fill the buffer (a decoder returns less than asked at frame ends).
                let mut at = 0;
                while at < CHUNK {
                    match input.read(&mut buf[at..]) {
                        Ok(0) => break,
                        Ok(k) => at += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(at);
                // A short chunk is the last; a writer that stopped says why itself.
                if (at > 0 && full_tx.send(buf).is_err()) || at < CHUNK {
                    return Ok(());
                }
            }
        })();
        drop(full_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")));
        match (read, written) {
            (Err(e), _) => Err((true, e)),
            (Ok(()), Err(e)) => Err((false, e)),
            (Ok(()), Ok(n)) => Ok(n),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest covers the whole file, whether the reader read all of it, stopped
    /// early, or was dropped at once; what it read is the file's bytes in order.
    #[test]
    fn the_hashing_reader_hashes_the_whole_file_whatever_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let want = sha256_file(&path).unwrap();

        let (mut r, h) = hashing_reader(&path).unwrap();
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(h.join().unwrap().unwrap(), want);

        let (mut r, h) = hashing_reader(&path).unwrap();
        let mut first = vec![0u8; 1000];
        r.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..1000]);
        drop(r);
        assert_eq!(h.join().unwrap().unwrap(), want);

        let (r, h) = hashing_reader(&path).unwrap();
        drop(r);
        assert_eq!(h.join().unwrap().unwrap(), want);
    }

    /// Every byte arrives in order across chunk boundaries (an input that returns short
    /// reads, of a length no multiple of the chunk); a failing read is reported as the
    /// read's, a failing write as the write's.
    #[test]
    fn copy_pipelined_copies_every_byte_and_says_which_side_failed() {
        struct Dribble(Vec<u8>, usize);
        impl Read for Dribble {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len() - self.1).min(70_001);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }
        let data: Vec<u8> = (0..3_500_017u32).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut out = File::create(&path).unwrap();
        let n = copy_pipelined(Dribble(data.clone(), 0), &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(std::fs::read(&path).unwrap() == data);

        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("bad frame"));
                }
                self.0 -= 1;
                buf.fill(1);
                Ok(buf.len())
            }
        }
        let mut out = File::create(dir.path().join("out2")).unwrap();
        let (reading, e) = copy_pipelined(Broken(3), &mut out).unwrap_err();
        assert!(reading, "{e}");
        assert_eq!(e.to_string(), "bad frame");

        let mut read_only = File::open(&path).unwrap();
        let (reading, _) = copy_pipelined(Dribble(data, 0), &mut read_only).unwrap_err();
        assert!(!reading);
    }
}
