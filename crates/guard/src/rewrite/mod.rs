//! Plan rewrites that make an allowed query safe to run: no data-dependent runtime errors, and
//! the group-size threshold of aggregate mode, or the privacy-unit carriers de-identified mode
//! needs for k-anonymity.

pub(crate) mod anonymize;
mod bound_contributions;
mod buckets;
mod cap_rows;
mod dropped;
mod enforce_min_group_size;
mod labels;
mod ladder;
mod people;
mod safe_arithmetic;
mod spelled;
mod top;
mod true_floor;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::common::Result;
use datafusion::logical_expr::LogicalPlan;
use veil_common::Mode;

use crate::{Assessment, GuardContext};

pub(crate) use anonymize::low_effect_note;
pub use anonymize::{ANON_LEAST_THRESHOLD, ANON_OUTLIERS, ANON_SEED};
pub use bound_contributions::{DP_PREFIX, DP_ROW, DpPlan, Variant};
pub use buckets::{ADMITTED, Buckets, claim_hashes, claim_name, with_claimed};
pub use dropped::{column_hashes, dropped_hashes, folded_hashes, with_dropped};
pub use enforce_min_group_size::UNIT_PREFIX;
pub use labels::{KeyLabel, NoiseLabels, Span};
pub(crate) use labels::{Unit as DateUnit, midnight};
pub use ladder::{Ladder, group_hashes, with_widened};

/// The rewritten plan and what the query layer needs to finish the answer.
#[derive(Debug, Clone)]
pub struct Rewritten {
    /// The plan to run.
    pub plan: LogicalPlan,
    /// Groups dropped by the threshold, counted while the plan runs.
    pub suppressed_groups: Arc<AtomicU64>,
    /// Dp mode: how to finish the answer once the bounded totals have their noise.
    pub dp: Option<DpPlan>,
    /// Aggregate mode over data about people: how to finish the answer once the measured
    /// totals have their sticky noise (the plan's layout is [`anonymize::bound`]'s).
    pub anonymized: Option<DpPlan>,
}

/// Rewrites a checked plan for `ctx.mode`, with what the check found (dp mode uses its
/// classification of the answer's aggregates and keys).
///
/// # Errors
/// A DataFusion error if a rewritten node cannot be rebuilt (a bug; the caller refuses).
pub fn rewrite(plan: LogicalPlan, ctx: &GuardContext, assessment: &Assessment) -> Result<Rewritten> {
    let plan = safe_arithmetic::rewrite(plan)?;
    let suppressed_groups = Arc::new(AtomicU64::new(0));
    let mut threshold = enforce_min_group_size::Threshold::new(ctx, Arc::clone(&suppressed_groups));
    let rewritten =
        |plan, dp, anonymized| Rewritten { plan, suppressed_groups: Arc::clone(&suppressed_groups), dp, anonymized };
    match ctx.mode {
        Mode::Dp => {
            let (plan, dp) = bound_contributions::bound(plan, assessment, &mut threshold)?;
            Ok(rewritten(plan, Some(dp), None))
        }
        Mode::Aggregate if assessment.anonymized => {
            let plan = true_floor::rewrite(plan)?;
            let (plan, anonymized) = anonymize::bound(plan, assessment, &mut threshold)?;
            Ok(rewritten(plan, None, Some(anonymized)))
        }
        Mode::Aggregate => Ok(rewritten(threshold.apply(plan)?, None, None)),
        // The check refuses it: de-identified queries read extracts, outside the guard.
        Mode::Deidentified => Err(datafusion::common::DataFusionError::Plan("deidentified mode reads extracts".into())),
    }
}
