//! The logs and journals the jails read, and the followers reading them:
//! prepared fallibly ([`Agent::watch`]) then installed infallibly
//! ([`Agent::follow_logs`]), the same way at start and on reload.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
};
use tracing::info;

use super::Agent;
use crate::{
    config::{Backend, Config},
    error::Error,
    kernel::BanTable,
    source::{
        DirWatcher, Follower, JournalLocation, JournalMatch, SourceError, SourceId, follow,
        follow_journal,
    },
};

/// A followed source: its task, and how to wake it (files only: journal
/// sources wake on their own).
pub(super) struct Followed {
    pub(super) task: JoinHandle<()>,
    wake: Option<Arc<Notify>>,
}

/// What following a configuration's sources needs, prepared (fallibly)
/// before anything changes.
pub(super) struct Watch {
    watcher: DirWatcher,
    /// A wake-up per log file.
    wakes: HashMap<PathBuf, Arc<Notify>>,
    /// Per jail reading the journal: where, and which entries.
    journals: HashMap<String, (JournalLocation, JournalMatch)>,
}

impl<T: BanTable> Agent<T> {
    /// Jail indexes per source of `config`: each log file, and the
    /// journal of each jail that reads it.
    fn source_jails(&self, config: &Config) -> HashMap<SourceId, Vec<usize>> {
        let mut sources: HashMap<SourceId, Vec<usize>> = HashMap::new();
        for (i, jail) in config.jails.iter().enumerate() {
            match jail.backend {
                Backend::Auto => {
                    for path in &jail.logpaths {
                        sources
                            .entry(SourceId::File(path.clone()))
                            .or_default()
                            .push(i);
                    }
                }
                Backend::Systemd => sources
                    .entry(SourceId::Journal(jail.name.clone()))
                    .or_default()
                    .push(i),
            }
        }
        sources
    }

    /// inotify on the directories of the log files in `sources`, with a
    /// wake-up per file (followers already running keep theirs); the
    /// journalmatch of each journal source, parsed. Fallible, and done
    /// before anything changes, so a reload that cannot watch or parse
    /// changes nothing.
    pub(super) fn watch(&self, config: &Config) -> Result<Watch, Error> {
        let sources = self.source_jails(config);
        let mut wakes = HashMap::new();
        let mut journals = HashMap::new();
        for (source, jails) in &sources {
            match source {
                SourceId::File(path) => {
                    let wake = self
                        .followers
                        .get(source)
                        .and_then(|f| f.wake.clone())
                        .unwrap_or_else(|| Arc::new(Notify::new()));
                    wakes.insert(path.clone(), wake);
                }
                SourceId::Journal(name) => {
                    let Some(jail) = jails.first().and_then(|&i| config.jails.get(i)) else {
                        continue;
                    };
                    let matches = JournalMatch::parse(&jail.journalmatch).map_err(|source| {
                        SourceError::Journalmatch {
                            jail: name.clone(),
                            source,
                        }
                    })?;
                    let location = jail
                        .journalpath
                        .clone()
                        .map_or(JournalLocation::System, JournalLocation::Directory);
                    journals.insert(name.clone(), (location, matches));
                }
            }
        }
        let list: Vec<(PathBuf, Arc<Notify>)> =
            wakes.iter().map(|(p, w)| (p.clone(), w.clone())).collect();
        let watcher = DirWatcher::new(&list).map_err(|source| SourceError::Watch {
            path: list.first().map(|(p, _)| p.clone()).unwrap_or_default(),
            source,
        })?;
        Ok(Watch {
            watcher,
            wakes,
            journals,
        })
    }

    /// Starts a follower for each source not yet followed, stops those no
    /// jail reads any more, and installs the new watcher. Infallible: the
    /// fallible part is [`Agent::watch`]. Returns, per journal started, when
    /// it has been opened at its starting position (files are opened here).
    pub(super) fn follow_logs(&mut self, watch: Watch) -> Vec<oneshot::Receiver<()>> {
        let mut opening = Vec::new();
        let sources = self.source_jails(&self.config);
        self.followers.retain(|source, followed| {
            let keep = sources.contains_key(source);
            if !keep {
                followed.task.abort();
                info!(%source, "no longer followed");
            }
            keep
        });
        for (path, wake) in watch.wakes {
            let source = SourceId::File(path);
            if self.followers.contains_key(&source) {
                continue;
            }
            let SourceId::File(path) = &source else {
                continue;
            };
            let follower = Follower::open(path, self.snapshot.positions.get(path).copied());
            let task = tokio::spawn(follow(follower, wake.clone(), self.batches.clone()));
            self.followers.insert(
                source,
                Followed {
                    task,
                    wake: Some(wake),
                },
            );
        }
        for (jail, (location, matches)) in watch.journals {
            let source = SourceId::Journal(jail.clone());
            if let Some(old) = self.followers.remove(&source) {
                // The journalmatch or path may have changed: start afresh
                // from the last entry handled.
                old.task.abort();
            }
            let cursor = self.snapshot.cursors.get(&jail).cloned();
            let (opened, is_opened) = oneshot::channel();
            opening.push(is_opened);
            let task = tokio::spawn(follow_journal(
                jail,
                location,
                matches,
                cursor,
                self.batches.clone(),
                opened,
            ));
            self.followers.insert(source, Followed { task, wake: None });
        }
        self.watcher = Some(watch.watcher);
        for (source, jails) in &sources {
            let names: Vec<&str> = jails
                .iter()
                .map(|&i| self.config.jails[i].name.as_str())
                .collect();
            info!(%source, jails = %names.join(","), "following");
        }
        // Wake every file follower once: a reload may have added a jail to
        // a log that has unread lines.
        self.followers
            .values()
            .filter_map(|f| f.wake.as_ref())
            .for_each(|w| w.notify_one());
        self.source_jails = sources;
        opening
    }
}
