//! The thin adapter that runs the guard inside DataFusion's analyzer, after the built-in rules
//! (so it sees coerced, view-expanded plans). Analyzer rules are never skipped, unlike
//! optimizer rules, and may change a plan's meaning, which thresholds do.

use std::sync::Mutex;

use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::AnalyzerRule;

use crate::{Assessment, GuardContext, Rewritten, Violation, check, rewrite};

/// What the guard decided and did, for the query layer to finish the answer.
#[derive(Debug, Clone)]
pub struct GuardOutcome {
    /// The checks' findings.
    pub assessment: Assessment,
    /// The rewrite's handles (suppressed-group counter, unit columns).
    pub rewritten: Rewritten,
}

/// The privacy guard as an [`AnalyzerRule`], for one request's session.
#[derive(Debug)]
pub struct PrivacyGuardRule {
    ctx: GuardContext,
    outcome: Mutex<Option<GuardOutcome>>,
}

impl PrivacyGuardRule {
    /// A rule for one request.
    pub fn new(ctx: GuardContext) -> Self {
        Self { ctx, outcome: Mutex::new(None) }
    }

    /// What the rule decided, once it has run.
    pub fn outcome(&self) -> Option<GuardOutcome> {
        self.outcome.lock().ok().and_then(|o| o.clone())
    }
}

impl AnalyzerRule for PrivacyGuardRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let mut slot =
            self.outcome.lock().map_err(|_| DataFusionError::Internal("privacy guard state poisoned".into()))?;
        if slot.is_some() {
            // One session runs one query; a second plan through the same rule is a bug, and
            // the guard fails closed rather than guessing which plan it has seen.
            return Err(DataFusionError::Internal("the privacy guard ran twice in one request".into()));
        }
        let mut assessment = check(&plan, &self.ctx).map_err(|v| DataFusionError::External(Box::new(v)))?;
        let rewritten = rewrite(plan, &self.ctx, &assessment)?;
        if let Some(note) = rewritten.anonymized.as_ref().and_then(crate::rewrite::low_effect_note) {
            assessment.rules.push(note);
        }
        let plan = rewritten.plan.clone();
        *slot = Some(GuardOutcome { assessment, rewritten });
        Ok(plan)
    }

    fn name(&self) -> &str {
        "privacy_guard"
    }
}

/// The guard's refusal inside a DataFusion error, however deeply it is wrapped.
pub fn violation(err: &DataFusionError) -> Option<&Violation> {
    match err {
        DataFusionError::External(e) => e.downcast_ref::<Violation>(),
        DataFusionError::Context(_, inner) => violation(inner),
        DataFusionError::Diagnostic(_, inner) => violation(inner),
        DataFusionError::Shared(inner) => violation(inner),
        _ => None,
    }
}
