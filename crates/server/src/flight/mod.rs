//! Arrow Flight SQL: the broker's query use case over gRPC, for ADBC, pyarrow and JDBC tools.
//!
//! ```text
//! Handshake (basic auth: any user, the token as password) ─► "authorization: Bearer …"
//! GetFlightInfo(CommandStatementQuery | prepared statement)
//!   ─► Broker::query (decided, run, recorded) ─► answer held under a ticket bound to the token
//!   ─► FlightInfo: the answer's schema with Veil's report in its metadata, and the ticket
//! DoGet(ticket) ─► the same token only, once, before it expires ─► the answer's batches
//! ```
//!
//! The query runs in `GetFlightInfo`, not in `DoGet`: ADBC takes the result schema from
//! `FlightInfo` and drops metadata that appears only in the stream, and the report (dp
//! intervals, ε spent, budget left, rules, audit record) exists only once the query has run.
//! Every query is one audit record, as over HTTP; metadata calls (`GetTables`, `GetSqlInfo`)
//! read the catalogue only.
//!
//! Per call, headers choose the result mode (`x-veil-mode`; by default the strictest mode
//! the policy allows on the query's datasets), the privacy loss (`x-veil-epsilon` or
//! `x-veil-rho`, `x-veil-noise`), a dry run (`x-veil-dry-run: true`) and dp intervals as columns too
//! (`x-veil-intervals: true`). A refusal is a gRPC status whose
//! message starts with Veil's stable code, also in the `x-veil-code` trailer with the
//! refusal's `x-veil-audit-id`.

mod store;

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use base64::Engine;
use futures::{FutureExt, Stream, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};
use veil_broker::Refused;
use veil_catalog::Principal;
use veil_common::{DatasetRef, ErrorKind};

use self::store::{Miss, Store};
use crate::error::ApiError;
use crate::routes::query::{arrow_answer, with_interval_columns};
use crate::state::AppState;

/// The catalogue name Flight SQL clients see; schemas are departments, tables datasets.
pub const CATALOG: &str = "veil";
/// The custom action that returns the caller's dp budget as JSON (as `GET /v1/budget`).
pub const BUDGET_ACTION: &str = "veil.budget";
/// Largest request message accepted (a query's SQL is capped lower by the broker).
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight SQL service over the server's state.
pub struct VeilFlightSql {
    state: AppState,
    store: Arc<Store>,
    sql_info: SqlInfoData,
}

impl VeilFlightSql {
    /// The service over `state`.
    ///
    /// # Errors
    /// When the server's static `GetSqlInfo` answer cannot be built (a bug).
    pub fn new(state: AppState) -> Result<Self, arrow_flight::error::FlightError> {
        let timeout = i32::try_from(state.broker.limits().deadline.as_secs()).unwrap_or(i32::MAX);
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Veil");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::FlightSqlServerStatementTimeout, timeout);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        Ok(Self { state, store: Arc::new(Store::default()), sql_info: info.build()? })
    }

    /// The signed-in caller of a call: its bearer token resolved, a refusal recorded like any
    /// failed sign-in.
    async fn principal(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let token = crate::auth::bearer(metadata.get("authorization").and_then(|v| v.to_str().ok()));
        self.state.authenticate(token).await.map_err(|e| status(&e, None))
    }

    /// Runs `sql` for the caller of `metadata` and holds its answer under a ticket. The call's
    /// headers choose the mode, loss and dry run; a prepared statement's own (`prepared`, from
    /// when it was made) fill in what the call leaves out.
    async fn query(
        &self,
        sql: String,
        metadata: &MetadataMap,
        descriptor: FlightDescriptor,
        prepared: Option<Options>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.principal(metadata).await?;
        let caller = veil_broker::Caller { principal, request_id: Some(uuid::Uuid::new_v4().to_string()) };
        let options = match Options::from_metadata(metadata) {
            Ok(options) => options.or(prepared.unwrap_or_default()),
            Err(error) => return Err(self.refused(&caller, &sql, None, error).await),
        };
        // Refused (and recorded) before anything runs or is charged.
        if !self.store.ticket_room(&caller.principal.token_id) {
            let error = veil_broker::Error::new(
                ErrorKind::PayloadTooLarge,
                "too_many_answers",
                format!(
                    "this token holds {} answers not yet fetched; fetch them (DoGet) or wait for them to expire",
                    store::MAX_TICKETS_PER_TOKEN
                ),
            );
            return Err(self.refused(&caller, &sql, options.mode.as_deref(), error).await);
        }
        let mode = match options.mode {
            Some(mode) => mode,
            None => self.state.broker.strictest_mode(&caller, &sql).await.as_str().to_owned(),
        };
        let request = veil_broker::Request {
            sql,
            mode,
            epsilon: options.epsilon,
            rho: options.rho,
            noise: options.noise,
            accuracy: None,
            dry_run: options.dry_run.unwrap_or(false),
        };
        let started = Instant::now();
        // A bug that panics is answered with the generic code and recorded, as over HTTP,
        // instead of dropping the call with nothing in the audit log.
        let released = match AssertUnwindSafe(self.state.broker.query(&caller, request)).catch_unwind().await {
            Ok(Ok(released)) => released,
            Ok(Err(Refused { error, audit_id })) => {
                return Err(status(&ApiError::from(error), audit_id.as_deref()));
            }
            Err(_) => {
                let mut entry = crate::state::entry_by(&caller.principal, "query", "failed");
                entry.detail = Some("the query's handler panicked".into());
                entry.request_id.clone_from(&caller.request_id);
                let recorded = self.state.audit(entry).await.is_ok();
                let reference = caller.request_id.as_deref().filter(|_| recorded);
                return Err(status(&ApiError::internal("a flight sql query panicked"), reference));
            }
        };
        let audit_id = released.audit_id();
        let internal = |e: &dyn std::fmt::Display| status(&ApiError::internal(e), Some(audit_id));
        let answer = released.answer();
        let (schema, batches) = arrow_answer(&released).map_err(|e| status(&e, Some(audit_id)))?;
        let intervals = answer.dp.as_ref().map(|dp| dp.intervals.as_slice()).unwrap_or_default();
        let (schema, batches) = if options.intervals.unwrap_or(false) {
            with_interval_columns(&schema, &batches, intervals).map_err(|e| internal(&e))?
        } else {
            (schema, batches)
        };
        let rows = i64::try_from(answer.row_count()).unwrap_or(i64::MAX);
        let handle = self
            .store
            .put_ticket(&caller.principal.token_id, store::Answer { schema: Arc::clone(&schema), batches })
            .ok_or_else(|| internal(&"no ticket could be made"))?;
        let ticket = TicketStatementQuery { statement_handle: handle.to_vec().into() };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| internal(&e))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())))
            .with_descriptor(descriptor)
            .with_total_records(rows)
            .with_ordered(true);
        let mut response = Response::new(info);
        if let Ok(reference) = MetadataValue::try_from(audit_id) {
            response.metadata_mut().insert("x-veil-audit-id", reference);
        }
        // Veil's own account of the call: sizes and time, never SQL or values.
        tracing::info!(audit_id, rows, ms = started.elapsed().as_millis() as u64, "flight sql query answered");
        Ok(response)
    }

    /// A query the adapter refused before the broker could decide it, recorded by the broker
    /// as one denied query.
    async fn refused(
        &self,
        caller: &veil_broker::Caller,
        sql: &str,
        mode: Option<&str>,
        error: veil_broker::Error,
    ) -> Status {
        let Refused { error, audit_id } = self.state.broker.refuse(caller, sql, mode, error).await;
        status(&ApiError::from(error), audit_id.as_deref())
    }

    /// A `FlightInfo` whose ticket is the metadata command itself (answered from the
    /// catalogue in `DoGet`, after the caller signs in again).
    async fn metadata_info(
        &self,
        metadata: &MetadataMap,
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        self.principal(metadata).await?;
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| status(&ApiError::internal(e), None))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec())))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// The datasets the caller may see in the catalogue (metadata only), by department.
    async fn datasets(&self, metadata: &MetadataMap) -> Result<Vec<veil_catalog::DatasetInfo>, Status> {
        let principal = self.principal(metadata).await?;
        crate::authz::read_catalogue(&self.state, &principal).map_err(|e| status(&e, None))?;
        self.state.blocking(|c| c.datasets(false)).await.map_err(|e| status(&e, None))
    }
}

/// One batch as a `DoGet` stream.
fn one_batch(batch: Result<RecordBatch, arrow_flight::error::FlightError>) -> BoxStream<arrow_flight::FlightData> {
    Box::pin(FlightDataEncoderBuilder::new().build(futures::stream::once(async { batch })).map_err(Status::from))
}

/// A dataset's columns as an Arrow schema, for `GetTables`; a type the catalogue writes that
/// Arrow cannot read back is shown as text.
fn dataset_schema(info: &veil_catalog::DatasetInfo) -> Schema {
    let fields: Vec<Field> = info
        .columns
        .iter()
        .map(|c| Field::new(&c.name, c.data_type.parse::<DataType>().unwrap_or(DataType::Utf8), true))
        .collect();
    Schema::new(fields)
}

/// What a call's headers ask of a query; each is unset when its header is absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Options {
    mode: Option<String>,
    epsilon: Option<f64>,
    rho: Option<f64>,
    noise: Option<veil_broker::Noise>,
    dry_run: Option<bool>,
    /// Dp intervals also as columns.
    intervals: Option<bool>,
}

impl Options {
    fn from_metadata(metadata: &MetadataMap) -> Result<Self, veil_broker::Error> {
        let text = |name: &'static str| -> Result<Option<String>, veil_broker::Error> {
            match metadata.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.trim().to_owned())).map_err(|_| invalid_header(name, "text")),
            }
        };
        let number = |name: &'static str| -> Result<Option<f64>, veil_broker::Error> {
            text(name)?.map(|s| s.parse::<f64>().map_err(|_| invalid_header(name, "a number"))).transpose()
        };
        let flag = |name: &'static str| -> Result<Option<bool>, veil_broker::Error> {
            match text(name)?.as_deref() {
                None => Ok(None),
                Some("false") => Ok(Some(false)),
                Some("true") => Ok(Some(true)),
                Some(_) => Err(invalid_header(name, "true or false")),
            }
        };
        Ok(Self {
            mode: text("x-veil-mode")?.filter(|m| !m.is_empty()),
            epsilon: number("x-veil-epsilon")?,
            rho: number("x-veil-rho")?,
            noise: text("x-veil-noise")?
                .map(|n| n.parse().map_err(|_| invalid_header("x-veil-noise", "laplace or gaussian")))
                .transpose()?,
            dry_run: flag("x-veil-dry-run")?,
            intervals: flag("x-veil-intervals")?,
        })
    }

    /// These options, with `base`'s where these are unset.
    fn or(self, base: Options) -> Options {
        Options {
            mode: self.mode.or(base.mode),
            epsilon: self.epsilon.or(base.epsilon),
            rho: self.rho.or(base.rho),
            noise: self.noise.or(base.noise),
            dry_run: self.dry_run.or(base.dry_run),
            intervals: self.intervals.or(base.intervals),
        }
    }
}

fn invalid_header(name: &str, expected: &str) -> veil_broker::Error {
    veil_broker::Error::invalid("invalid_header", format!("header {name} must be {expected}"))
}

/// The one place an error becomes a gRPC status: its code from the error's kind, a message
/// that starts with Veil's stable code, and that code and the audit record's number in the
/// response's metadata.
fn status(error: &ApiError, audit_id: Option<&str>) -> Status {
    let code = match error.kind() {
        ErrorKind::InvalidRequest | ErrorKind::Unprocessable | ErrorKind::NotAcceptable => tonic::Code::InvalidArgument,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::Forbidden => tonic::Code::PermissionDenied,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::Conflict => tonic::Code::AlreadyExists,
        ErrorKind::PayloadTooLarge | ErrorKind::StorageFull => tonic::Code::ResourceExhausted,
        ErrorKind::Timeout => tonic::Code::DeadlineExceeded,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    let mut status = Status::new(code, format!("{}: {}", error.code(), error.message()));
    status.metadata_mut().insert("x-veil-code", MetadataValue::from_static(error.code()));
    if let Some(Ok(reference)) = audit_id.map(MetadataValue::try_from) {
        status.metadata_mut().insert("x-veil-audit-id", reference);
    }
    status
}

/// A ticket or handle that could not be used, alike whether unknown, used or expired.
fn miss(miss: Miss, what: &str) -> Status {
    match miss {
        Miss::Unknown => status(
            &ApiError::new(ErrorKind::NotFound, "unknown_handle", format!("no such {what}: unknown, used or expired")),
            None,
        ),
        Miss::NotYours => status(
            &ApiError::new(ErrorKind::Forbidden, "not_your_handle", format!("this {what} belongs to another token")),
            None,
        ),
    }
}

#[tonic::async_trait]
impl FlightSqlService for VeilFlightSql {
    type FlightService = VeilFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        // Basic auth with any user name and the token as password, or the bearer token itself.
        let token = if let Some(basic) = header.strip_prefix("Basic ") {
            base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|pair| pair.split_once(':').map(|(_, token)| token.to_owned()))
        } else {
            crate::auth::bearer(Some(header))
        };
        self.state.authenticate(token.clone()).await.map_err(|e| status(&e, None))?;
        let token = token.unwrap_or_default();
        let bearer =
            MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| status(&ApiError::internal(e), None))?;
        let reply = HandshakeResponse { protocol_version: 0, payload: token.into_bytes().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>> =
            Response::new(Box::pin(futures::stream::once(async { Ok(reply) })));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        self.query(query.query, &metadata, descriptor, None).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let principal = self.principal(&metadata).await?;
        let (sql, options) = self
            .store
            .statement(&principal.token_id, &query.prepared_statement_handle)
            .map_err(|m| miss(m, "prepared statement"))?;
        self.query(sql, &metadata, descriptor, Some(options)).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        let principal = self.principal(request.metadata()).await?;
        let answer =
            self.store.take_ticket(&principal.token_id, &ticket.statement_handle).map_err(|m| miss(m, "ticket"))?;
        let batches = answer.batches.into_iter().map(Ok);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(answer.schema)
            .build(futures::stream::iter(batches))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.principal(request.metadata()).await?;
        // The headers of the call that makes the statement hold for its executions, unless an
        // execution's own say otherwise.
        let options = Options::from_metadata(request.metadata()).map_err(|e| status(&e.into(), None))?;
        // Nothing runs until the statement is executed: the answer's schema is known only then
        // (after the policy's decision), so none is promised here.
        let handle = self.store.put_statement(&principal.token_id, query.query, options).ok_or_else(|| {
            status(
                &ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    "too_many_statements",
                    format!(
                        "this token holds {} prepared statements; close some first",
                        store::MAX_STATEMENTS_PER_TOKEN
                    ),
                ),
                None,
            )
        })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.to_vec().into(),
            dataset_schema: Default::default(),
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.principal(request.metadata()).await?;
        self.store
            .close_statement(&principal.token_id, &query.prepared_statement_handle)
            .map_err(|m| miss(m, "prepared statement"))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.metadata_info(&metadata, query, &schema, descriptor).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        Ok(Response::new(one_batch(query.into_builder(&self.sql_info).build())))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let schema = query.into_builder().schema();
        self.metadata_info(&metadata, query, &schema, descriptor).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&metadata, query, &schema, descriptor).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        let datasets = self.datasets(request.metadata()).await?;
        let mut departments: Vec<String> = datasets.iter().map(|d| d.dataset.department.to_string()).collect();
        departments.sort();
        departments.dedup();
        let mut builder = query.into_builder();
        for department in departments {
            builder.append(CATALOG, department);
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&metadata, query, &schema, descriptor).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        let datasets = self.datasets(request.metadata()).await?;
        let mut builder = query.into_builder();
        for info in &datasets {
            let DatasetRef { department, name } = &info.dataset;
            builder
                .append(CATALOG, department.as_str(), name.as_str(), "TABLE", &dataset_schema(info))
                .map_err(|e| status(&ApiError::internal(e), None))?;
        }
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        let schema = query.into_builder().schema();
        self.metadata_info(&metadata, query, &schema, descriptor).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoGetStream>, Status> {
        self.principal(request.metadata()).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(Response::new(one_batch(builder.build())))
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<arrow_flight::sql::DoPutPreparedStatementResult, Status> {
        self.principal(request.metadata()).await?;
        Err(status(
            &ApiError::bad_request(
                "parameters_unsupported",
                "bound parameters are not supported; write values in the SQL",
            ),
            None,
        ))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: BUDGET_ACTION.to_owned(),
            description: "the caller's dp budget per dataset, as JSON (as GET /v1/budget)".to_owned(),
        })])
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as arrow_flight::flight_service_server::FlightService>::DoActionStream>, Status> {
        if request.get_ref().r#type != BUDGET_ACTION {
            return Err(status(
                &ApiError::bad_request(
                    "unknown_action",
                    format!("unknown action; Veil's own is {BUDGET_ACTION}, besides Flight SQL's"),
                ),
                None,
            ));
        }
        let principal = self.principal(request.metadata()).await?;
        let caller = veil_broker::Caller { principal, request_id: None };
        let budget = self.state.broker.budget(&caller).await.map_err(|e| status(&e.into(), None))?;
        let views: Vec<_> = budget.iter().map(crate::routes::budget::budget_view).collect();
        let body = serde_json::to_vec(&views).map_err(|e| status(&ApiError::internal(e), None))?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async { Ok(result) }))))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `listener` until `shutdown` completes, then lets calls in flight finish.
///
/// # Errors
/// When the service cannot be built or the listener fails.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A call may take the query deadline, plus the time to stream its answer.
    let deadline = state.broker.limits().deadline + Duration::from_secs(30);
    let service = FlightServiceServer::new(VeilFlightSql::new(state)?)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(usize::MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let started = Instant::now();
    tonic::transport::Server::builder()
        .timeout(deadline)
        .concurrency_limit_per_connection(64)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!(secs = started.elapsed().as_secs(), "flight sql stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_choose_mode_loss_and_dry_run() {
        let mut m = MetadataMap::new();
        assert_eq!(Options::from_metadata(&m).expect("empty"), Options::default());
        m.insert("x-veil-mode", MetadataValue::from_static("dp"));
        m.insert("x-veil-epsilon", MetadataValue::from_static("0.5"));
        m.insert("x-veil-dry-run", MetadataValue::from_static("true"));
        let options = Options::from_metadata(&m).expect("valid");
        assert_eq!(options.mode.as_deref(), Some("dp"));
        assert_eq!(options.epsilon, Some(0.5));
        assert_eq!(options.dry_run, Some(true));
        // A prepared statement's headers fill in what an execution leaves out, never override it.
        let execution = Options { epsilon: Some(0.1), ..Options::default() };
        let merged = execution.or(options);
        assert_eq!((merged.mode.as_deref(), merged.epsilon, merged.dry_run), (Some("dp"), Some(0.1), Some(true)));
        m.insert("x-veil-epsilon", MetadataValue::from_static("half"));
        let refused = Options::from_metadata(&m).expect_err("not a number");
        assert_eq!(refused.code(), "invalid_header");
        assert_eq!(refused.message(), "header x-veil-epsilon must be a number");
        let mut m = MetadataMap::new();
        m.insert("x-veil-noise", MetadataValue::from_static("gaussian"));
        assert_eq!(Options::from_metadata(&m).expect("valid").noise, Some(veil_broker::Noise::Gaussian));
        m.insert("x-veil-noise", MetadataValue::from_static("normal"));
        let refused = Options::from_metadata(&m).expect_err("no such noise");
        assert_eq!(refused.message(), "header x-veil-noise must be laplace or gaussian");
    }

    #[test]
    fn a_refusal_keeps_its_code_and_audit_record() {
        let s = status(&ApiError::forbidden("no"), Some("f0c2b1e4-7a51-4c7e-9f3b-2d1e6a0b9c84"));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(s.message(), "forbidden: no");
        assert_eq!(s.metadata().get("x-veil-code").and_then(|v| v.to_str().ok()), Some("forbidden"));
        assert_eq!(
            s.metadata().get("x-veil-audit-id").and_then(|v| v.to_str().ok()),
            Some("f0c2b1e4-7a51-4c7e-9f3b-2d1e6a0b9c84")
        );
    }
}
