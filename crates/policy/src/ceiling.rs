//! The level ceiling of design §2, enforced in code so that no policy line can widen it.

use veil_common::{Level, Mode};

/// What the ceiling says about a mode at a level, for a dataset of another department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// The policy decides.
    Policy,
    /// Allowed only under an approved access request (and the policy must not deny).
    NeedsGrant,
    /// Never, whatever the policy or any grant says; the text says why.
    Never(&'static str),
}

/// The ceiling for another department's dataset at `level` in `mode`. A department's own
/// datasets have no ceiling beyond the absence of a raw mode.
///
/// `dp` is allowed wherever exact aggregates are: it reveals strictly less.
pub fn across_departments(level: Level, mode: Mode) -> Ceiling {
    match (level, mode) {
        (Level::Core, _) => Ceiling::Never("CORE data (核心数据) never leaves its department"),
        (Level::L4, Mode::Dp) => Ceiling::Policy,
        (Level::L4, _) => Ceiling::Never("L4 data leaves its department only in dp mode"),
        (Level::Important, Mode::Dp) => Ceiling::NeedsGrant,
        (Level::Important, _) => Ceiling::Never("IMPORTANT data (重要数据) leaves its department only in dp mode"),
        (Level::L3, Mode::Dp) => Ceiling::Policy,
        (Level::L3, _) => Ceiling::NeedsGrant,
        (Level::L1 | Level::L2, _) => Ceiling::Policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_matches_the_design_table() {
        use Ceiling::*;
        let table = [
            (Level::L1, [Policy, Policy, Policy]),
            (Level::L2, [Policy, Policy, Policy]),
            (Level::L3, [NeedsGrant, Policy, NeedsGrant]),
            (Level::L4, [Never(""), Policy, Never("")]),
            (Level::Important, [Never(""), NeedsGrant, Never("")]),
            (Level::Core, [Never(""), Never(""), Never("")]),
        ];
        for (level, expected) in table {
            for (mode, want) in [Mode::Aggregate, Mode::Dp, Mode::Deidentified].into_iter().zip(expected) {
                let got = across_departments(level, mode);
                let same = matches!((got, want), (Never(_), Never(_))) || got == want;
                assert!(same, "{level} {}: got {got:?}, want {want:?}", mode.as_str());
            }
        }
    }
}
