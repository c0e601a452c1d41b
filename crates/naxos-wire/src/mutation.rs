//! Deliberately broken variants of the protocols, for proving that the
//! simulator's checkers catch real bugs (mutation testing). They exist only
//! when the `mutations` feature is on, and even then only on the thread that
//! switched one on: the simulator runs every host on its test's thread, so one
//! test's mutation never leaks into another test or into a real server.

/// A deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutation {
    /// The log unit answers writes before the batch's fsync.
    AckBeforeSync = 1,
    /// The sequencer ignores the recovered tail and starts again from 0.
    SequencerFromZero = 2,
    /// Readers read one replica (not necessarily the tail) without repair, and
    /// fill a hole at that replica alone when it has nothing.
    ReadAnyReplica = 3,
    /// A reconfiguration seals the active segment at the lowest tail among
    /// its sealed replicas instead of the highest.
    SealAtLowestTail = 4,
    /// State transfer leaves out the last batch of each stripe it copies.
    TransferSkipsLastBatch = 6,
    /// A sequencer starts from the tails of one log unit (the first that
    /// answered) instead of those of every unit (CorfuDB #2715).
    SequencerFromOneUnit = 7,
    /// A reconfiguration puts a returning (or new) log unit in its chains
    /// without catching it up first.
    AddBeforeCatchUp = 8,
    /// The sequencer grants every transaction's token without its conflict
    /// check, and replayers apply commit records without re-validating them.
    NoConflictCheck = 9,
    /// A new sequencer starts its conflict watermark at 0 instead of its
    /// bootstrap tail (it knows no writes from before it).
    WatermarkFromZero = 10,
    /// A checkpoint is labelled with the tail when it is written instead of
    /// the position its state is as of: openers skip what lies between.
    CheckpointAhead = 11,
    /// A node takes a trim above what its log unit holds without checking it
    /// against the sequencer's tail (a hostile `Trim(tail+10^6)` then
    /// deletes every acknowledged entry).
    TrimAboveTail = 12,
    /// A catch-up before the seal decides a value the joining replica holds
    /// and its chain lacks through the chain at once, while the live
    /// sequencer never counted it (soak seed 712375).
    SettleExtrasEarly = 13,
    /// A log unit's start-up scan leaves the position of a record that fails
    /// its checksum empty (it reads as unwritten, a hole's place) instead of
    /// corrupted, as every store did before issue 12.
    DamageReadsUnwritten = 14,
    /// Nodes never repair the records their disks lost from their chains'
    /// other replicas (reads are still served around them).
    NoMend = 15,
}

#[cfg(feature = "mutations")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

/// Switches a mutation on (or all off) for this thread; returns whether
/// mutations are compiled in (the `mutations` feature), i.e. whether it took.
pub fn set(m: Option<Mutation>) -> bool {
    #[cfg(feature = "mutations")]
    {
        ACTIVE.with(|a| a.set(m));
        true
    }
    #[cfg(not(feature = "mutations"))]
    {
        m.is_none()
    }
}

/// Whether `m` is switched on for this thread.
#[inline]
pub fn active(m: Mutation) -> bool {
    #[cfg(feature = "mutations")]
    {
        ACTIVE.with(|a| a.get() == Some(m))
    }
    #[cfg(not(feature = "mutations"))]
    {
        let _ = m;
        false
    }
}
