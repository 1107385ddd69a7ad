//! Dataset registration (stewards) and the catalogue (everyone signed in).

use std::path::PathBuf;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use veil_audit::DatasetUse;
use veil_catalog::{DatasetInfo, DatasetSpec, MetadataInput, Principal};
use veil_common::{DatasetRef, DepartmentId, ErrorKind};

use super::AppJson;
use crate::auth::Caller;
use crate::authz;
use crate::dto::{
    AccessView, DatasetMetadata, DatasetView, DraftReason, DraftView, ErrorBody, ModeAccess, QueryColumn, UploadView,
    Validation,
};
use crate::error::ApiError;
use crate::state::{AppState, entry_by, for_this_request, now_unix, subject};
use crate::uploads::{Finishing, Upload};

/// Largest `metadata` part accepted.
const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// An uploaded file in the data directory's `tmp/`, removed when dropped, whatever happens.
struct TempUpload(PathBuf);

impl Drop for TempUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Registers a new dataset, or a new version of one (stewards of its department).
///
/// Either `multipart/form-data` with a `metadata` part (JSON, first) and a `file` part (CSV
/// with a header, Arrow IPC file or stream, or Parquet), or `application/json` metadata whose
/// `source` names a file under the server's import root.
#[utoipa::path(post, path = "/v1/datasets", tag = "datasets", security(("bearer" = [])),
    request_body(content = DatasetMetadata, description = "JSON metadata with `source`, or multipart with `metadata` and `file` parts",
                 content_type = "application/json"),
    responses((status = 201, body = DatasetView), (status = 200, description = "a dry run: what would be stored; nothing was", body = Validation),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 507, body = ErrorBody)))]
pub(crate) async fn datasets_register(
    State(state): State<AppState>,
    Caller(caller): Caller,
    request: Request,
) -> Result<Response, ApiError> {
    let content_type =
        request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    // A client that names its upload can follow it at `GET /v1/uploads/{id}`.
    let tracked = state.uploads.named(caller.user.as_str(), request.headers())?;
    let finishing = Finishing(tracked.clone());
    let ((spec, dry_run), source, _upload) = if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        let (spec, upload) = match read_upload(&state, &caller, &mut multipart, tracked.as_deref()).await {
            Ok(read) => read,
            Err(refused) => {
                drain(multipart).await;
                return Err(refused);
            }
        };
        (spec, upload.0.clone(), Some(upload))
    } else if content_type.starts_with("application/json") {
        let AppJson(metadata) = AppJson::<DatasetMetadata>::from_request(request, &state).await?;
        let relative = metadata.source.clone().ok_or_else(|| {
            ApiError::bad_request(
                "source_required",
                "JSON registration needs `source`, a path under the import root; or upload the file as multipart",
            )
        })?;
        let spec = authorize_and_validate(&state, &caller, metadata)?;
        let root = state.config.import_root.clone().ok_or_else(|| {
            ApiError::bad_request(
                "import_disabled",
                "this server has no import root; upload the file as multipart instead",
            )
        })?;
        let path = state.blocking(move |_| veil_catalog::resolve_import(&root, &relative)).await?;
        (spec, path, None)
    } else {
        return Err(ApiError::bad_request(
            "unsupported_media_type",
            "send multipart/form-data (parts `metadata` and `file`) or application/json (metadata with `source`)",
        ));
    };
    if dry_run {
        let level = spec.level.to_string();
        let dataset = spec.dataset.to_string();
        let progress = tracked.clone();
        let checked = state
            .broker
            .ingesting(move |c| c.check_dataset(&spec, &source, &|rows| read_so_far(progress.as_deref(), rows)))
            .await?;
        let mut entry = for_this_request(entry_by(&caller, "dataset.check", "ok"));
        entry.datasets = vec![DatasetUse { dataset: dataset.clone(), level: Some(level.clone()) }];
        entry.detail = Some(format!("dry run: {} rows valid, nothing stored", checked.rows));
        entry.rows = Some(checked.rows);
        state.audit(entry).await?;
        let columns = checked.columns.into_iter().map(|(name, data_type)| QueryColumn { name, data_type }).collect();
        let view = Validation {
            dataset,
            level,
            rows: checked.rows,
            columns,
            one_row_per_unit: checked.one_row_per_unit,
            stored: false,
        };
        finishing.done();
        return Ok((StatusCode::OK, Json(view)).into_response());
    }
    let user = caller.user.clone();
    let mut entry = for_this_request(entry_by(&caller, "dataset.register", "ok"));
    entry.datasets = vec![DatasetUse { dataset: spec.dataset.to_string(), level: Some(spec.level.to_string()) }];
    // The record commits with the new version (the catalogue's outbox), then goes to the log.
    let record = move |version: u64, rows: u64| {
        entry.detail = Some(format!("version {version}, {rows} rows"));
        entry.rows = Some(rows);
        serde_json::to_string(&entry).ok()
    };
    let progress = tracked.clone();
    let (info, pending) = state
        .broker
        .ingesting(move |c| {
            c.register_dataset(&spec, &source, &user, record, &|rows| read_so_far(progress.as_deref(), rows))
        })
        .await?;
    state.metrics.registered(info.row_count);
    state.audit_pending(pending).await?;
    finishing.done();
    Ok((StatusCode::CREATED, Json(DatasetView::from(info))).into_response())
}

fn read_so_far(upload: Option<&Upload>, rows: u64) {
    if let Some(upload) = upload {
        upload.read(rows);
    }
}

/// How far a registration or a de-identified access request (its extract) the caller named with
/// the `Veil-Upload-Id` header has got: while it runs, and for ten minutes after it ends. Only
/// its sender sees it.
#[utoipa::path(get, path = "/v1/uploads/{id}", tag = "datasets", security(("bearer" = [])),
    params(("id" = String, Path, description = "the id the client gave in the Veil-Upload-Id header")),
    responses((status = 200, body = UploadView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn uploads_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<UploadView>, ApiError> {
    let upload = state.uploads.get(caller.user.as_str(), &id).ok_or_else(|| {
        ApiError::new(
            ErrorKind::NotFound,
            "upload_not_found",
            "no upload of yours by that id (they are kept ten minutes)",
        )
    })?;
    let (stage, bytes_received, rows_read) = upload.now();
    Ok(Json(UploadView { stage: stage.as_str().to_owned(), bytes_received, rows_read }))
}

/// Parses the metadata, checks the caller may register in its department, then validates it;
/// with whether it asks for a dry run. Authorization comes first so a steward of another
/// department learns nothing from the validation messages.
fn authorize_and_validate(
    state: &AppState,
    caller: &Principal,
    metadata: DatasetMetadata,
) -> Result<(DatasetSpec, bool), ApiError> {
    let department = DepartmentId::new(metadata.department.clone())
        .map_err(|e| ApiError::bad_request("invalid_name", e.to_string()))?;
    authz::steward_of(state, caller, &department)?;
    let dry_run = metadata.dry_run;
    Ok((DatasetSpec::validate(MetadataInput::from(metadata))?, dry_run))
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorKind::PayloadTooLarge, "upload_too_large", "the upload is larger than this server accepts")
    } else {
        ApiError::bad_request("invalid_multipart", e.body_text())
    }
}

/// Reads the `metadata` and `file` parts. Metadata sent first is checked before a byte of the
/// file is stored, so a refused registration stores nothing of a large upload (its rest is
/// read and discarded, see [`drain`]).
async fn read_upload(
    state: &AppState,
    caller: &Principal,
    multipart: &mut Multipart,
    tracked: Option<&Upload>,
) -> Result<((DatasetSpec, bool), TempUpload), ApiError> {
    let mut spec = None;
    let mut upload = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("metadata") => {
                if spec.is_some() {
                    return Err(ApiError::bad_request("duplicate_part", "the `metadata` part appears twice"));
                }
                let text = read_small(field).await?;
                let metadata: DatasetMetadata = serde_json::from_slice(&text)
                    .map_err(|e| ApiError::bad_request("invalid_metadata", format!("metadata: {e}")))?;
                if metadata.source.is_some() {
                    return Err(ApiError::bad_request(
                        "source_with_upload",
                        "metadata names a `source` but a file was uploaded: use one or the other",
                    ));
                }
                spec = Some(authorize_and_validate(state, caller, metadata)?);
            }
            Some("file") => {
                if upload.is_some() {
                    return Err(ApiError::bad_request("duplicate_part", "the `file` part appears twice"));
                }
                upload = Some(store_upload(state, field, tracked).await?);
            }
            Some(other) => {
                let shown: String = other.chars().take(32).collect();
                return Err(ApiError::bad_request(
                    "unknown_part",
                    format!("unknown part `{shown}`: expected `metadata` and `file`"),
                ));
            }
            None => {
                return Err(ApiError::bad_request(
                    "unknown_part",
                    "a part has no name: expected `metadata` and `file`",
                ));
            }
        }
    }
    let spec = spec.ok_or_else(|| ApiError::bad_request("metadata_required", "the `metadata` part is missing"))?;
    let upload = upload.ok_or_else(|| ApiError::bad_request("file_required", "the `file` part is missing"))?;
    Ok((spec, upload))
}

/// How long a refused upload's rest is read and thrown away before the refusal is sent.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads and discards what is left of a refused upload (at most the upload limit, for at most
/// [`DRAIN_FOR`]), so the client, still sending, reads the refusal: closing the connection under
/// it made the CLI print "cannot reach the server" instead (7 of 20 tries).
async fn drain(mut multipart: Multipart) {
    let rest = async {
        while let Ok(Some(mut field)) = multipart.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, rest).await;
}

async fn read_small(mut field: Field<'_>) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if out.len() + chunk.len() > MAX_METADATA_BYTES {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                "metadata_too_large",
                "the metadata part is larger than 1 MiB",
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Streams the `file` part to `tmp/`, chunk by chunk: memory holds one chunk at a time.
async fn store_upload(
    state: &AppState,
    mut field: Field<'_>,
    tracked: Option<&Upload>,
) -> Result<TempUpload, ApiError> {
    let upload = TempUpload(state.catalog.dir().tmp_file("upload"));
    let mut file = tokio::fs::File::create_new(&upload.0).await.map_err(ApiError::io)?;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        file.write_all(&chunk).await.map_err(ApiError::io)?;
        if let Some(tracked) = tracked {
            tracked.received(chunk.len() as u64);
        }
    }
    file.flush().await.map_err(ApiError::io)?;
    Ok(upload)
}

/// Drafts a file's metadata (stewards, for their department): a multipart `file` part (any format
/// a registration reads). Each column's type, a suggested tag with its reason, the privacy unit,
/// the sampled range of numbers and a level; nothing is registered, and the file is not kept.
#[utoipa::path(post, path = "/v1/datasets/draft", tag = "datasets", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data", description = "a `file` part"),
    responses((status = 200, body = DraftView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn datasets_draft(
    State(state): State<AppState>,
    Caller(caller): Caller,
    mut multipart: Multipart,
) -> Result<Json<DraftView>, ApiError> {
    let department =
        caller.department.clone().ok_or_else(|| ApiError::forbidden("drafting needs a steward's department"))?;
    authz::steward_of(&state, &caller, &department)?;
    let mut upload = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        if field.name() != Some("file") || upload.is_some() {
            return Err(ApiError::bad_request("unknown_part", "a draft takes one part, `file`"));
        }
        upload = Some(store_upload(&state, field, None).await?);
    }
    let upload = upload.ok_or_else(|| ApiError::bad_request("file_required", "the `file` part is missing"))?;
    let path = upload.0.clone();
    let draft = state.blocking(move |_| veil_catalog::draft::draft(&path)).await?;
    drop(upload);
    let detail =
        format!("{} columns drafted from {} rows; nothing registered", draft.columns.len(), draft.rows_sampled);
    state.event("dataset.draft", Some(&caller), Some(department.to_string()), "ok", detail).await?;
    Ok(Json(DraftView {
        metadata: draft.metadata("", department.as_str()),
        reasons: draft
            .columns
            .iter()
            .map(|c| DraftReason { column: c.name.clone(), tag: c.tag.to_string(), reason: c.reason.clone() })
            .collect(),
        level_reason: draft.level_reason.clone(),
        rows_sampled: draft.rows_sampled as u64,
    }))
}

/// `GET /v1/datasets` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Include retired datasets.
    #[serde(default)]
    include_retired: bool,
}

/// Lists datasets: metadata only (anyone signed in).
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets", security(("bearer" = [])), params(ListParams),
    responses((status = 200, body = [DatasetView]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn datasets_list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Vec<DatasetView>>, ApiError> {
    authz::read_catalogue(&state, &caller)?;
    let Query(params) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let datasets = state.blocking(move |c| c.datasets(params.include_retired)).await?;
    let sees_all = sees_every_size(&state, &caller);
    Ok(Json(datasets.into_iter().map(|d| view_for(&caller, sees_all, d)).collect()))
}

/// Whether `caller` may see the exact sizes of every dataset (administrators and auditors).
fn sees_every_size(state: &AppState, caller: &Principal) -> bool {
    authz::manage_identity(state, caller).is_ok() || authz::read_audit(state, caller).is_ok()
}

/// A dataset's catalogue view as `caller` may see it: the exact sizes of a dataset about people
/// only for its own department, or a caller who `sees_all` ([`sees_every_size`]).
fn view_for(caller: &Principal, sees_all: bool, d: DatasetInfo) -> DatasetView {
    let sizes = sees_all || d.privacy_unit.is_none() || caller.department.as_ref() == Some(&d.dataset.department);
    let view = DatasetView::from(d);
    if sizes { view } else { view.without_sizes() }
}

fn parse_ref(text: &str) -> Result<DatasetRef, ApiError> {
    text.parse().map_err(|e: veil_common::IdError| ApiError::bad_request("invalid_name", e.to_string()))
}

/// One dataset's metadata: level, description, columns with tags, row count, versions.
#[utoipa::path(get, path = "/v1/datasets/{dataset}", tag = "datasets", security(("bearer" = [])),
    params(("dataset" = String, Path, description = "department.name, e.g. civil.elderly")),
    responses((status = 200, body = DatasetView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn datasets_show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetView>, ApiError> {
    authz::read_catalogue(&state, &caller)?;
    let dataset = parse_ref(&dataset)?;
    let info = state.blocking(move |c| c.dataset(&dataset)).await?;
    Ok(Json(view_for(&caller, sees_every_size(&state, &caller), info)))
}

/// Retires a dataset (stewards of its department).
#[utoipa::path(delete, path = "/v1/datasets/{dataset}", tag = "datasets", security(("bearer" = [])),
    params(("dataset" = String, Path, description = "department.name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn datasets_retire(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(dataset): Path<String>,
) -> Result<StatusCode, ApiError> {
    let dataset = parse_ref(&dataset)?;
    authz::steward_of(&state, &caller, &dataset.department)?;
    let mut entry = for_this_request(entry_by(&caller, "dataset.retire", "ok"));
    entry.datasets = vec![DatasetUse { dataset: dataset.to_string(), level: None }];
    let record = serde_json::to_string(&entry).ok();
    let pending = state.blocking(move |c| c.retire_dataset(&dataset, record)).await?;
    state.audit_pending(pending).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the caller may do with a dataset: for each result mode, allowed or not and the rule that
/// decided, as the query path will decide it.
#[utoipa::path(get, path = "/v1/datasets/{dataset}/access", tag = "datasets", security(("bearer" = [])),
    params(("dataset" = String, Path, description = "department.name")),
    responses((status = 200, body = AccessView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn datasets_access(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(dataset): Path<String>,
) -> Result<Json<AccessView>, ApiError> {
    authz::read_catalogue(&state, &caller)?;
    let dataset = parse_ref(&dataset)?;
    let info = state.blocking(move |c| c.dataset(&dataset)).await?;
    if info.retired_at.is_some() {
        return Err(veil_catalog::Error::DatasetNotFound(info.dataset).into());
    }
    let meta = [veil_policy::DatasetMeta { dataset: info.dataset.clone(), level: info.level }];
    let who = subject(&caller);
    let now = now_unix();
    let modes = veil_common::Mode::ALL
        .into_iter()
        .map(|mode| {
            let decision = veil_policy::PolicyEngine::decide(state.policy.as_ref(), &who, &meta, mode, now);
            let check = decision.checks.into_iter().next();
            ModeAccess {
                mode: mode.as_str().to_owned(),
                allowed: decision.allowed,
                rule: check.as_ref().map(|c| c.rule.to_owned()).unwrap_or_default(),
                reason: check.map(|c| c.reason).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Json(AccessView { dataset: info.dataset.to_string(), level: info.level.as_str().to_owned(), modes }))
}
