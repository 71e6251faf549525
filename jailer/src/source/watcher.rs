//! inotify on the directories of followed logs: an event naming a followed
//! file (or its rotated siblings) wakes its follower.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// Wakes followers on inotify events in their directories.
pub struct DirWatcher {
    _watcher: RecommendedWatcher,
}

impl DirWatcher {
    /// Watches the directory of each path; an event naming a file whose name
    /// starts with a followed file's name (`mail.log`, `mail.log.1`) wakes it.
    pub fn new(files: &[(PathBuf, Arc<Notify>)]) -> notify::Result<Self> {
        let mut by_dir: HashMap<PathBuf, Vec<(String, Arc<Notify>)>> = HashMap::new();
        for (path, wake) in files {
            let dir = path
                .parent()
                .map(Path::to_owned)
                .unwrap_or_else(|| PathBuf::from("."));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_dir.entry(dir).or_default().push((name, wake.clone()));
        }
        let table = by_dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let Ok(event) = res else {
                    // Queue overflow and the like: wake everyone, they re-check.
                    table.values().flatten().for_each(|(_, w)| w.notify_one());
                    return;
                };
                if event.paths.is_empty() {
                    table.values().flatten().for_each(|(_, w)| w.notify_one());
                }
                for p in &event.paths {
                    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                        continue;
                    };
                    let name = name.to_string_lossy();
                    if let Some(list) = table.get(dir) {
                        list.iter()
                            .filter(|(n, _)| name.starts_with(n.as_str()))
                            .for_each(|(_, w)| w.notify_one());
                    }
                }
            })?;
        for dir in by_dir.keys() {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(Self { _watcher: watcher })
    }
}
