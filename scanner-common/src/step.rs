//! The steps of the probe path, for timing variants of the XDP program
//! (`cargo xtask bench`): the object built with scanner-ebpf's `steps`
//! feature, loaded with the read-only global [`STOP_AFTER`] set to a step,
//! passes the packet right after that step, so the cost of each step is
//! the difference between two variants. The daemon's object is built
//! without the feature: it has none of these checks.

/// The name of the read-only global that selects the variant.
pub const STOP_AFTER: &str = "STOP_AFTER";

/// No early stop.
pub const WHOLE: u32 = 0;
/// The per-CPU packet counter and the parse of the headers.
pub const PARSE: u32 = 1;
/// The rules (the blocks-empty flag), the probe's classification (CONFIG,
/// the open and ignored port bitmaps) and the clock.
pub const CLASSIFY: u32 = 2;
/// The source's first-probe slot (its keyed hash and read).
pub const SLOT: u32 = 3;
/// Admission: a known source's entry found in SOURCES, or a new source's
/// first probe held in its slot. (The probe that admits a source goes on
/// to the end in every variant, so later ones find the same state.)
pub const ADMISSION: u32 = 4;
/// The Threshold Random Walk's update: the (source, port) pair in PORTS,
/// the entry's counts, the trial and the thresholds.
pub const TRW: u32 = 5;

/// The steps in order, with what the bench calls them.
pub const STEPS: [(u32, &str); 5] = [
    (PARSE, "parse"),
    (CLASSIFY, "rules, classification, clock"),
    (SLOT, "first-probe slot"),
    (ADMISSION, "admission (SOURCES, or the slot held)"),
    (TRW, "TRW update (PORTS, entry)"),
];
