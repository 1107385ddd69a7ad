//! The same work whether or not a person's rows are there.
//!
//! DataFusion rightly skips work it does not need: a hash join whose build side is empty (or
//! holds only NULL keys) never reads its probe side, and a join's build side narrows the probe
//! side's scan through a dynamic filter. Over data about people that saving is an answer: a
//! join filtered to one person's traits read (and capped per person) the whole other table only
//! when that person existed, and the time told it (0.55 s against 0.93 s in aggregate mode, and
//! a range on a sensitive column then bisected the value in about a hundred queries, with no
//! budget). A measurement therefore wraps each input of every operator with several inputs in
//! a [`DrainedExec`], which passes its rows through; once the measurement's answer is complete,
//! [`Drains::finish`] reads every such input its consumer stopped reading to its end, and the
//! rows are dropped. Reading is cheaper than probing, so the join is also given a build row
//! matching nothing ([`crate::probe`]). Dynamic filters and Parquet pruning by the query's own
//! constants are switched off for such queries (see the engine's session).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

/// One input's stream, shared by its consumer and [`Drains::finish`]; `None` once read to its end.
type Slot = Arc<Mutex<Option<SendableRecordBatchStream>>>;

/// The inputs of one run that must be read to their end.
#[derive(Default)]
pub(crate) struct Drains {
    slots: Mutex<Vec<Slot>>,
}

impl std::fmt::Debug for Drains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drains").finish_non_exhaustive()
    }
}

impl Drains {
    /// Reads every wrapped input that was not read to its end, dropping its rows (and any
    /// failure: the answer is complete). Inputs started while doing so are read too.
    pub(crate) async fn finish(&self) {
        loop {
            let next = match self.slots.lock() {
                Ok(mut slots) => slots.pop(),
                Err(_) => return,
            };
            let Some(slot) = next else { return };
            let stream = slot.lock().ok().and_then(|mut s| s.take());
            if let Some(mut stream) = stream {
                while stream.next().await.is_some() {}
            }
        }
    }
}

/// `plan` with each input of every operator that has several (joins, unions) wrapped in a
/// [`DrainedExec`] registered with `drains`.
pub(crate) fn drained(plan: Arc<dyn ExecutionPlan>, drains: &Arc<Drains>) -> Result<Arc<dyn ExecutionPlan>> {
    let keep = || ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
    Ok(plan
        .transform_up(|node| {
            if node.children().len() < 2 {
                return Ok(Transformed::no(node));
            }
            let children = node
                .children()
                .into_iter()
                .map(|child| {
                    Arc::new(DrainedExec::new(Arc::clone(child), Arc::clone(drains))) as Arc<dyn ExecutionPlan>
                })
                .collect();
            node.replace_children(children, keep()).map(Transformed::yes)
        })?
        .data)
}

/// Passes its input's rows through, and registers its stream so that the rows nobody read are
/// read at the end of the run.
#[derive(Debug)]
pub(crate) struct DrainedExec {
    input: Arc<dyn ExecutionPlan>,
    drains: Arc<Drains>,
}

impl DrainedExec {
    fn new(input: Arc<dyn ExecutionPlan>, drains: Arc<Drains>) -> Self {
        Self { input, drains }
    }
}

impl DisplayAs for DrainedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DrainedExec")
    }
}

impl ExecutionPlan for DrainedExec {
    fn name(&self) -> &str {
        "DrainedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(only_child(children, "DrainedExec")?, Arc::clone(&self.drains))))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let slot: Slot = Arc::new(Mutex::new(Some(input)));
        self.drains
            .slots
            .lock()
            .map_err(|_| DataFusionError::Internal("drains poisoned".into()))?
            .push(Arc::clone(&slot));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, Shared { slot })))
    }
}

/// The one input of an operator `name` that has one, from `children`.
pub(crate) fn only_child(mut children: Vec<Arc<dyn ExecutionPlan>>, name: &str) -> Result<Arc<dyn ExecutionPlan>> {
    match (children.pop(), children.is_empty()) {
        (Some(input), true) => Ok(input),
        _ => Err(DataFusionError::Internal(format!("{name} has one input"))),
    }
}

/// The consumer's side of a [`Slot`].
struct Shared {
    slot: Slot,
}

impl Stream for Shared {
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Ok(mut slot) = self.slot.lock() else {
            return Poll::Ready(Some(Err(DataFusionError::Internal("drains poisoned".into()))));
        };
        let Some(stream) = slot.as_mut() else { return Poll::Ready(None) };
        let next = stream.poll_next_unpin(cx);
        if let Poll::Ready(None) = next {
            *slot = None;
        }
        next
    }
}
