//! A shared store in process memory, for unit tests of the lookup and of
//! the proxy's hit and miss paths without sockets. It keeps what it is
//! given (no purge checks: those are Redis's) and can be told to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Entry, Store, StoreError, StoreFuture};

/// The fake shared store.
#[derive(Default)]
pub struct FakeStore {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    down: AtomicBool,
}

impl FakeStore {
    /// Makes every call fail as a Redis that is away would.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// The entry under `key`, as stored.
    pub fn entry(&self, key: &str) -> Option<Arc<Entry>> {
        self.map().get(key).cloned()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Redis(crate::redis::Error::Disconnected));
        }
        Ok(())
    }
}

impl Store for FakeStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Entry>>> {
        Box::pin(async move {
            self.check()?;
            Ok(self.entry(key))
        })
    }

    fn put<'a>(&'a self, key: &'a str, entry: Arc<Entry>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.check()?;
            self.map().insert(key.to_owned(), entry);
            Ok(())
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            self.check()?;
            Ok(self.map().remove(key).is_some())
        })
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(async move {
            self.check()?;
            let mut map = self.map();
            let before = map.len();
            map.retain(|k, _| !k.starts_with(prefix));
            Ok(before - map.len())
        })
    }
}
