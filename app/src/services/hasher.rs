//! Password hashing: argon2id with the crate's default parameters (19 MiB, 2 passes), run by a
//! [`Hasher`]: a fixed pool of worker threads with a short queue, so a storm of logins can
//! neither exhaust memory nor starve the rest of the server.

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use ratatoskr_core::token::random_bytes;

use crate::domain::time::Timestamp;

/// Most argon2 memory blocks (1 KiB each) a stored hash may ask for: 256 MiB. The hashes this
/// application writes use 19 MiB; a row asking for more than this is refused, not computed.
const MAX_BLOCKS: usize = 256 * 1024;

/// Run argon2 with `argon`'s parameters in `mem` (grown to the size they need, and kept).
fn argon2_into(
    mem: &mut Vec<Block>,
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let n = argon.params().block_count();
    if n > MAX_BLOCKS {
        return Err(argon2::Error::MemoryTooMuch);
    }
    if mem.len() < n {
        mem.resize(n, Block::default());
    }
    argon.hash_password_into_with_memory(password, salt, out, &mut mem[..n])
}

/// Hash a password with argon2id (the crate's default parameters) and a fresh salt, in `mem`:
/// the PHC string.
fn hash_in(mem: &mut Vec<Block>, password: &[u8]) -> anyhow::Result<String> {
    let salt: [u8; 16] = random_bytes();
    let argon = Argon2::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(mem, &argon, password, &salt, &mut out)
        .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon.params())
            .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?,
        salt: Some(Salt::new(&salt).map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Check a password against a stored PHC hash (or the dummy hash), in `mem`. Anything that is
/// not a well-formed argon2 hash is simply not a match.
fn verify_in(mem: &mut Vec<Block>, password: &[u8], hash: Option<&str>) -> bool {
    let hash = hash.unwrap_or_else(|| dummy_hash());
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    if argon2_into(mem, &argon, password, salt, &mut out).is_err() {
        return false;
    }
    // Output's equality is constant time.
    Output::new(&out).is_ok_and(|computed| &computed == expected)
}

/// A valid hash of a random password, verified against when the user does not exist so that
/// a login for an unknown name takes as long as one for a known name. Computed once, on a
/// hashing worker (never on the async runtime).
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let pw: [u8; 16] = random_bytes();
        hash_in(&mut Vec::new(), &pw).unwrap_or_default()
    })
}

/// The hashing pool is full: answer `503` with `Retry-After` rather than queue more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the password-hashing pool is full")
    }
}

impl std::error::Error for Busy {}

enum Job {
    Hash(String, tokio::sync::oneshot::Sender<anyhow::Result<String>>),
    Verify(String, Option<String>, tokio::sync::oneshot::Sender<bool>),
}

/// Password hashing with a bound: a fixed set of worker threads (one per core by default)
/// runs argon2id, a short queue holds what waits for them, and what finds the queue full is
/// refused at once with [`Busy`] instead of piling up.
///
/// Each argon2id run needs 19 MiB. The workers take it from a small pool of buffers that they
/// give back after each run, so a storm of logins uses at most workers × 19 MiB, the same
/// buffers over and over (allocating and freeing 19 MiB per run instead lets the allocator's
/// fragmentation grow the process by about that much per run, to hundreds of MiB); the pool is
/// emptied once the workers have been idle for a while ([`Hasher::release_idle_memory`]). The
/// async runtime's blocking pool is left to other work. Cheap to clone; the workers end when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    jobs: std::sync::mpsc::Sender<Job>,
    workers: usize,
    queue: usize,
    shared: std::sync::Arc<Shared>,
}

/// What the workers and the handles share.
struct Shared {
    /// argon2id runs started.
    runs: std::sync::atomic::AtomicU64,
    /// Runs going on now.
    running: std::sync::atomic::AtomicUsize,
    /// Jobs accepted and not yet answered (running or waiting): at most workers + queue.
    admitted: std::sync::atomic::AtomicUsize,
    /// When the last run ended ([`Timestamp`] milliseconds: an atomic holds no newtype).
    last_done: std::sync::atomic::AtomicI64,
    /// Memory buffers not in use.
    memory: std::sync::Mutex<Vec<Vec<Block>>>,
}

/// How long the workers must have been idle before their memory is given back.
pub const RELEASE_IDLE_MEMORY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish()
    }
}

impl Shared {
    fn run(&self, job: Job) {
        use std::sync::atomic::Ordering::Relaxed;
        self.runs.fetch_add(1, Relaxed);
        self.running.fetch_add(1, Relaxed);
        let mut mem = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // The buffer goes back before the answer does, so the next job finds it.
        let done = |mem: Vec<Block>| {
            self.memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(mem);
            self.last_done.store(Timestamp::now().as_millis(), Relaxed);
            self.running.fetch_sub(1, Relaxed);
            // Room for the next job before this one's answer: a client that sends its next
            // request when it gets this answer must not find the pool full.
            self.admitted
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        };
        match job {
            Job::Hash(pw, reply) => {
                let result = hash_in(&mut mem, pw.as_bytes());
                done(mem);
                let _ = reply.send(result);
            }
            Job::Verify(pw, hash, reply) => {
                let result = verify_in(&mut mem, pw.as_bytes(), hash.as_deref());
                done(mem);
                let _ = reply.send(result);
            }
        }
    }
}

impl Hasher {
    /// `workers` threads (0 = one per available core) and room for `queue` waiting jobs.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = if workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            workers
        };
        // The bound is the `admitted` count, not the channel's: a rendezvous channel (queue 0)
        // would refuse a job while a worker that has just answered is not back at `recv` yet.
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let shared = std::sync::Arc::new(Shared {
            runs: 0.into(),
            running: 0.into(),
            admitted: 0.into(),
            last_done: 0.into(),
            memory: std::sync::Mutex::new(Vec::new()),
        });
        for i in 0..workers {
            let rx = rx.clone();
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else {
                            return; // every sender dropped
                        };
                        shared.run(job);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-hashing worker");
            }
        }
        Hasher {
            jobs,
            workers,
            queue,
            shared,
        }
    }

    /// Give the workers' memory back when no run has ended for
    /// [`RELEASE_IDLE_MEMORY_AFTER`] and none is going on (housekeeping calls this).
    /// Returns whether it did.
    pub fn release_idle_memory(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let idle_since = Timestamp::from_millis(self.shared.last_done.load(Relaxed));
        if self.shared.running.load(Relaxed) > 0
            || Timestamp::now().since(idle_since) < RELEASE_IDLE_MEMORY_AFTER
        {
            return false;
        }
        let mut memory = self.shared.memory.lock().unwrap_or_else(|p| p.into_inner());
        let had = !memory.is_empty();
        memory.clear();
        memory.shrink_to_fit();
        had
    }

    /// Memory held in the pool's idle buffers now, in bytes.
    pub fn memory_held(&self) -> usize {
        self.shared
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| m.capacity() * std::mem::size_of::<Block>())
            .sum()
    }

    /// Worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Jobs that may wait for a worker.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// argon2id runs started since the pool was made (hashes and verifications).
    pub fn runs(&self) -> u64 {
        self.shared.runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn submit(&self, job: Job) -> Result<(), Busy> {
        use std::sync::atomic::Ordering::{AcqRel, Acquire};
        let capacity = self.workers + self.queue;
        let admitted = self
            .shared
            .admitted
            .fetch_update(AcqRel, Acquire, |n| (n < capacity).then_some(n + 1));
        if admitted.is_err() {
            metrics::counter!("ratatoskr_app_hash_busy_total").increment(1);
            return Err(Busy);
        }
        if self.jobs.send(job).is_err() {
            self.shared.admitted.fetch_sub(1, AcqRel);
            tracing::error!("every password-hashing worker has stopped");
            return Err(Busy);
        }
        Ok(())
    }

    /// Hash `password` with argon2id and a fresh salt (PHC string).
    pub async fn hash(&self, password: String) -> anyhow::Result<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Hash(password, tx))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("a password-hashing worker stopped"))?
    }

    /// Check `password` against a stored hash; `None` checks against a dummy hash so that an
    /// unknown user costs as much as a known one (and is never right).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, Busy> {
        let known = hash.is_some();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Verify(password, hash, tx))?;
        Ok(rx.await.unwrap_or(false) && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_hash_with_argon2id_and_verify() {
        let hasher = Hasher::new(1, 4);
        let h = hasher.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_eq!(
            hasher.verify("correct horse".into(), Some(h.clone())).await,
            Ok(true)
        );
        assert_eq!(
            hasher.verify("wrong horse".into(), Some(h)).await,
            Ok(false)
        );
        assert_eq!(
            hasher.verify("x".into(), Some("not a hash".into())).await,
            Ok(false)
        );
        // No user: checked against the dummy hash, never right.
        assert_eq!(hasher.verify("".into(), None).await, Ok(false));
        assert_eq!(hasher.runs(), 5);
    }

    #[test]
    fn hashes_are_standard_phc_strings_both_ways() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let mut mem = Vec::new();
        let ours = hash_in(&mut mem, b"correct horse").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", ours.as_str())
                .is_ok()
        );
        let theirs = Argon2::default()
            .hash_password_with_salt(b"battery staple", &[7u8; 16])
            .unwrap()
            .to_string();
        assert!(verify_in(&mut mem, b"battery staple", Some(&theirs)));
        assert!(!verify_in(&mut mem, b"battery stapler", Some(&theirs)));
        assert!(!verify_in(
            &mut mem,
            b"x",
            Some("$argon2id$v=19$m=999999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA")
        ));
        assert!(!verify_in(&mut mem, b"x", Some("$scrypt$whatever")));
        // One buffer of 19 MiB served every run.
        assert_eq!(mem.len(), 19456);
    }

    #[tokio::test]
    async fn workers_reuse_one_buffer_each_and_give_it_back_when_idle() {
        let hasher = Hasher::new(1, 8);
        for i in 0..6 {
            assert_eq!(hasher.verify(format!("guess {i}"), None).await, Ok(false));
        }
        assert_eq!(hasher.memory_held(), 19456 * 1024);
        // Just used: kept.
        assert!(!hasher.release_idle_memory());
        assert_eq!(hasher.memory_held(), 19456 * 1024);
        hasher.shared.last_done.store(
            Timestamp::now()
                .minus(std::time::Duration::from_secs(11))
                .as_millis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(hasher.release_idle_memory());
        assert_eq!(hasher.memory_held(), 0);
    }

    #[tokio::test]
    async fn a_full_hashing_pool_refuses_at_once_instead_of_queueing() {
        // One worker, no queue: while it works, every other job is refused without waiting.
        let hasher = Hasher::new(1, 0);
        let h = hasher.clone();
        let first = tokio::spawn(async move { h.hash("first password".into()).await });
        // The first job is admitted as soon as it is submitted (no need for the worker to be
        // waiting); poll until it is.
        let started = std::time::Instant::now();
        while hasher
            .shared
            .admitted
            .load(std::sync::atomic::Ordering::Acquire)
            == 0
        {
            assert!(started.elapsed() < std::time::Duration::from_secs(10));
            tokio::task::yield_now().await;
        }
        let t = std::time::Instant::now();
        assert_eq!(hasher.verify("x".into(), None).await, Err(Busy));
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
        assert!(first.await.unwrap().is_ok());
        // Free again the moment the answer is in.
        assert!(hasher.hash("again".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_pool_without_a_queue_takes_the_next_job_as_soon_as_it_has_answered() {
        // A rendezvous channel refused a job sent right after an answer, before the worker was
        // back at its receive: a sequential client got `503` from an idle pool.
        let hasher = Hasher::new(1, 0);
        for i in 0..20 {
            assert_eq!(hasher.verify("x".into(), None).await, Ok(false), "job {i}");
        }
    }
}
