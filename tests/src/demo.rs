//! The demo world `veil serve --demo` serves (same seed, same departments, users and datasets),
//! loaded into a [`TestServer`] over HTTP, with the generated batches kept for ground truth.

use std::collections::HashMap;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

use crate::TestServer;

/// A server holding the demo, each demo user's token, and the generated data.
pub struct Demo {
    /// The server.
    pub server: TestServer,
    /// Token by demo user id.
    pub tokens: HashMap<&'static str, String>,
    /// The generated datasets, as registered.
    pub datasets: Vec<veil_demo::DemoDataset>,
}

impl Demo {
    /// The demo over `people` residents, registered by its stewards as CSV uploads.
    pub async fn start(people: usize) -> Self {
        let server = TestServer::start().await;
        for (id, name) in veil_demo::DEPARTMENTS {
            server.department(id, name).await;
        }
        let mut tokens = HashMap::new();
        for (id, department, roles) in veil_demo::USERS {
            tokens.insert(id, server.user(id, department, roles).await);
        }
        let datasets = veil_demo::generate(veil_demo::DEMO_SEED, people).unwrap();
        for d in &datasets {
            let mut csv = Vec::new();
            arrow::csv::WriterBuilder::new().with_header(true).build(&mut csv).write(&d.batch).unwrap();
            let steward = &tokens[format!("{}-steward", d.department).as_str()];
            let (status, body) = server.upload(steward, &d.metadata, csv).await;
            assert!(status.is_success(), "registering {}.{}: {status} {body}", d.department, d.name);
        }
        Self { server, tokens, datasets }
    }

    /// Plain DataFusion over the generated batches, each as `department.name`: the ground truth.
    pub async fn truth(&self) -> SessionContext {
        let ctx = SessionContext::new();
        for d in &self.datasets {
            ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", d.department)).await.unwrap();
            let table = MemTable::try_new(d.batch.schema(), vec![vec![d.batch.clone()]]).unwrap();
            ctx.register_table(format!("{}.{}", d.department, d.name), Arc::new(table)).unwrap();
        }
        ctx
    }
}
