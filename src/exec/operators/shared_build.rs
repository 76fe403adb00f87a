//! The right side of a broadcast join and its index, built once for all the join's subtasks.
//!
//! Each subtask gets the same rows, and building the same index in every subtask was 5% of
//! TPC-H Q3's CPU. The first subtask to have read the right side builds; the others do not wait
//! for it: they go on to their left input (their reader starts as soon as the join filter has
//! the keys, which the builder gives before it indexes them), hold its rows, and take the build
//! when it is there. Waiting for it had them idle while one core built (TPC-H Q3 and Q5 on
//! Parquet: a few ms at the start of the lineitem phase).
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use polars::prelude::DataFrame;

use super::hash_index::HashIndex;

/// The right side put together, and its index where its keys allow one.
pub type Build = (DataFrame, Option<Arc<HashIndex>>);

#[derive(Default)]
enum State {
    #[default]
    Open,
    Building,
    Built(Build),
    /// The builder failed (its error stops the job).
    Failed,
}

/// Where the subtasks of one broadcast join share their build.
#[derive(Default)]
pub struct SharedBuild {
    state: Mutex<State>,
    ready: Condvar,
}

/// What a subtask that has read the whole right side is to do.
pub enum Claim {
    /// Build it, and hand it to the others with [`Builder::publish`].
    Build(Builder),
    /// Another subtask is building it: take it later ([`SharedBuild::try_get`], [`SharedBuild::wait`]).
    Wait,
    /// It is built.
    Built(Build),
}

/// The build is not coming: the subtask that was building it failed.
#[derive(Debug, PartialEq, Eq)]
pub struct BuildFailed;

impl SharedBuild {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by each subtask once its right input has ended.
    pub fn claim(self: &Arc<Self>) -> Result<Claim, BuildFailed> {
        let mut state = self.lock();
        match &*state {
            State::Open => {
                *state = State::Building;
                Ok(Claim::Build(Builder { slot: self.clone(), published: false }))
            }
            State::Building => Ok(Claim::Wait),
            State::Built(b) => Ok(Claim::Built(b.clone())),
            State::Failed => Err(BuildFailed),
        }
    }

    /// The build, if it is done.
    pub fn try_get(&self) -> Result<Option<Build>, BuildFailed> {
        match &*self.lock() {
            State::Built(b) => Ok(Some(b.clone())),
            State::Failed => Err(BuildFailed),
            State::Open | State::Building => Ok(None),
        }
    }

    /// The build, once it is done.
    pub fn wait(&self) -> Result<Build, BuildFailed> {
        let mut state = self.lock();
        loop {
            match &*state {
                State::Built(b) => return Ok(b.clone()),
                State::Failed => return Err(BuildFailed),
                State::Open | State::Building => state = self.ready.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner()),
            }
        }
    }
}

/// The right to build: dropped without publishing (an error, a panic), it wakes the others
/// with [`BuildFailed`] instead of leaving them waiting.
pub struct Builder {
    slot: Arc<SharedBuild>,
    published: bool,
}

impl Builder {
    /// Hands the build to the other subtasks.
    pub fn publish(mut self, build: Build) {
        *self.slot.lock() = State::Built(build);
        self.published = true;
        self.slot.ready.notify_all();
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        if !self.published {
            *self.slot.lock() = State::Failed;
            self.slot.ready.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_subtask_builds_and_the_others_take_its_build_when_it_is_done() {
        let slot = Arc::new(SharedBuild::default());
        let Ok(Claim::Build(builder)) = slot.claim() else { panic!("the first claim builds") };
        assert!(matches!(slot.claim(), Ok(Claim::Wait)));
        assert_eq!(slot.try_get().map(|b| b.is_some()), Ok(false));
        let waiter = {
            let slot = slot.clone();
            std::thread::spawn(move || slot.wait().map(|(df, _)| df.height()))
        };
        builder.publish((DataFrame::empty_with_height(3), None));
        assert_eq!(waiter.join().unwrap(), Ok(3));
        assert_eq!(slot.try_get().map(|b| b.map(|(df, _)| df.height())), Ok(Some(3)));
        assert!(matches!(slot.claim(), Ok(Claim::Built((df, None))) if df.height() == 3));
    }

    #[test]
    fn a_builder_that_fails_wakes_the_others() {
        let slot = Arc::new(SharedBuild::default());
        let Ok(Claim::Build(builder)) = slot.claim() else { panic!("the first claim builds") };
        let waiter = {
            let slot = slot.clone();
            std::thread::spawn(move || slot.wait().map(|_| ()))
        };
        drop(builder);
        assert_eq!(waiter.join().unwrap(), Err(BuildFailed));
        assert!(slot.try_get().is_err());
        assert!(slot.claim().is_err());
    }
}
