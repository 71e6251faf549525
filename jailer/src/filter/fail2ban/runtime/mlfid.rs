//! Multi-line failures keyed by `<F-MLFID>` (a connection or session id):
//! fail2ban's `mlfidCache` and `Filter._mergeFailure`.
//!
//! Lines of one connection are merged into one cached entry until a line
//! yields the address, `<F-NOFAIL>` marks the connection as good (or
//! `<F-MLFGAINED>` as authenticated), or `<F-MLFFORGET>` ends it.

use std::collections::VecDeque;

use crate::filter::fail2ban::runtime::failure::FailData;

/// `Utils.Cache(maxCount=100, maxTime=5*60)` of `Filter.mlfidCache`.
const MAX_ENTRIES: usize = 100;
const MAX_AGE: f64 = 300.0;

/// The `nfflgs` bits of `_mergeFailure`.
const NOFAIL: u8 = 1;
const FORGET: u8 = 2;
const CACHED_NOFAIL: u8 = 4;
const GAINED: u8 = 8;

#[derive(Debug)]
struct Entry {
    key: String,
    data: FailData,
    expires: f64,
}

/// Where the merged failure data lives after a merge: fail2ban goes on
/// modifying the very dict it cached, so later changes must reach the entry.
#[derive(Debug)]
pub(crate) enum Merged {
    Cached(String),
    Owned(FailData),
}

/// Connection id → the failure data gathered for it, oldest first.
#[derive(Debug, Default)]
pub(crate) struct MlfidCache {
    entries: VecDeque<Entry>,
}

impl MlfidCache {
    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.key == key)
    }

    /// `Cache.get`: an entry past its age is dropped.
    fn live(&mut self, key: &str, now: f64) -> Option<usize> {
        let i = self.position(key)?;
        if self.entries[i].expires > now {
            return Some(i);
        }
        self.entries.remove(i);
        None
    }

    /// `Cache.set`: when full, drop expired entries from the front and the
    /// oldest live one; an existing key keeps its place.
    fn set(&mut self, key: &str, data: FailData, now: f64) {
        if self.entries.len() >= MAX_ENTRIES {
            while let Some(e) = self.entries.pop_front() {
                if e.expires > now && self.entries.len() < MAX_ENTRIES {
                    break;
                }
            }
        }
        let expires = now + MAX_AGE;
        match self.position(key) {
            Some(i) => {
                self.entries[i].data = data;
                self.entries[i].expires = expires;
            }
            None => self.entries.push_back(Entry {
                key: key.to_owned(),
                data,
                expires,
            }),
        }
    }

    /// The data a merge left, wherever it lives.
    pub(crate) fn data_mut<'a>(&'a mut self, merged: &'a mut Merged) -> Option<&'a mut FailData> {
        match merged {
            Merged::Owned(data) => Some(data),
            Merged::Cached(key) => {
                let i = self.position(key)?;
                Some(&mut self.entries[i].data)
            }
        }
    }

    /// `_mergeFailure`: fold a new match of connection `mlfid` (its groups
    /// in `fail`, its lines in `matched`) into what is known about it.
    pub(crate) fn merge(
        &mut self,
        mlfid: &str,
        mut fail: FailData,
        matched: &[String],
        now: f64,
    ) -> Merged {
        let mut flags = 0u8;
        if fail.groups.truthy("mlfgained") {
            flags |= GAINED | NOFAIL;
            if !fail.groups.truthy("nofail") {
                let gained = fail.groups.get("mlfgained").map(str::to_owned);
                fail.groups.set(&"nofail".into(), gained);
            }
        } else if fail.groups.truthy("nofail") {
            flags |= NOFAIL;
        }
        if fail.groups.pop("mlfforget").is_some_and(|v| !v.is_empty()) {
            flags |= FORGET;
        }
        let user = fail.groups.get("user").map(str::to_owned);
        let users;
        let mut merged = if let Some(i) = self.live(mlfid, now) {
            let cached = &mut self.entries[i].data;
            users = cached.update_users(user.as_deref());
            if cached.groups.pop("nofail").is_some_and(|v| !v.is_empty()) {
                flags |= CACHED_NOFAIL;
            }
            if cached
                .groups
                .pop("mlfgained")
                .is_some_and(|v| !v.is_empty())
            {
                flags |= CACHED_NOFAIL;
            }
            if flags & GAINED != 0 {
                cached.mlfpending = false;
            }
            // No pending failure: the lines were reported already.
            if flags & CACHED_NOFAIL == 0 && !cached.mlfpending {
                cached.matches.clear();
            }
            cached.groups.update_present(&fail.groups);
            if flags & FORGET != 0 {
                match self.entries.remove(i) {
                    Some(e) => Merged::Owned(e.data),
                    None => Merged::Owned(FailData::default()),
                }
            } else {
                Merged::Cached(mlfid.to_owned())
            }
        } else if flags & FORGET == 0 {
            users = fail.update_users(user.as_deref());
            self.set(mlfid, fail, now);
            Merged::Cached(mlfid.to_owned())
        } else {
            users = 0;
            Merged::Owned(fail)
        };
        let Some(data) = self.data_mut(&mut merged) else {
            return merged;
        };
        // Pending failures or several users: this is a failure after all.
        if std::mem::take(&mut data.mlfpending) || users > 1 {
            data.groups.pop("nofail");
            data.groups.pop("mlfgained");
            flags &= !(GAINED | NOFAIL);
        }
        if flags & NOFAIL == 0 {
            let mut lines = std::mem::take(&mut data.nofail_matches);
            lines.append(&mut data.matches);
            if flags & GAINED == 0 {
                lines.extend_from_slice(matched);
            }
            data.matches = lines;
        } else if flags & (NOFAIL | FORGET) == NOFAIL {
            data.nofail_matches.extend_from_slice(matched);
        }
        merged
    }
}
