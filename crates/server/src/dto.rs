//! Wire types: what the API reads and writes as JSON. Domain types never derive serde; these
//! are converted at the edge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use veil_catalog::{DatasetInfo, Department, User};

/// The body of every error response.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `untagged_column`.
    pub code: String,
    /// What was wrong and where; never a data value.
    pub message: String,
}

/// `POST /v1/departments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    /// Id, which becomes the SQL schema: `civil`.
    pub id: String,
    /// Display name: 民政局.
    pub name: String,
}

/// A department.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DepartmentView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Created at (RFC 3339).
    pub created_at: String,
}

impl From<Department> for DepartmentView {
    fn from(d: Department) -> Self {
        Self { id: d.id.to_string(), name: d.name, created_at: d.created_at }
    }
}

/// `POST /v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Id: `health-analyst`.
    pub id: String,
    /// Department; required for stewards and analysts.
    #[serde(default)]
    pub department: Option<String>,
    /// Roles: any of `admin`, `steward`, `analyst`, `auditor`.
    pub roles: Vec<String>,
}

/// A user.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Department.
    pub department: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Created at (RFC 3339).
    pub created_at: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            department: u.department.map(|d| d.to_string()),
            roles: u.roles.iter().map(|r| r.to_string()).collect(),
            created_at: Some(u.created_at),
        }
    }
}

/// A newly issued token: shown once, never again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// The token's public id, for revocation.
    pub id: String,
    /// The bearer token.
    pub token: String,
}

/// Dataset metadata as a steward declares it: the `metadata` part of an upload, or the whole
/// JSON body of a server-side import.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetMetadata {
    /// Dataset name (the SQL table): `elderly`.
    pub name: String,
    /// Owning department (the SQL schema): `civil`.
    pub department: String,
    /// `L1`, `L2`, `L3`, `L4`, `IMPORTANT` or `CORE`.
    pub level: String,
    /// What the dataset holds.
    #[serde(default)]
    pub description: String,
    /// The identifier column that names the person a row is about.
    #[serde(default)]
    pub privacy_unit: Option<String>,
    /// `csv`, `parquet`, `arrow_file`, `arrow_stream` or `xlsx` (also `xls`: a
    /// spreadsheet); recognised from the file when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// The sheet of a spreadsheet to read (the first when absent); its first row with a value is
    /// the header.
    #[serde(default)]
    pub sheet: Option<String>,
    /// A CSV file's encoding: `utf-8`, `gb18030` (also `gbk`), `utf-16le` or `utf-16be`;
    /// detected from the bytes when absent.
    #[serde(default)]
    pub encoding: Option<String>,
    /// A CSV file's field separator: `,`, `;`, `|` or a tab (`\t` or `tab`); detected from the
    /// header line when absent.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// For server-side import: a path relative to the configured import root.
    #[serde(default)]
    pub source: Option<String>,
    /// Every column of the file, with its tag.
    pub columns: BTreeMap<String, ColumnMetadata>,
    /// Dp mode's settings; defaults where absent.
    #[serde(default)]
    pub dp: DpMetadata,
    /// Each person is on one row (a registry of people, not of events): checked at
    /// registration (refused with `one_row_per_person_violated` where a unit repeats), and only
    /// a dataset declared so takes the registry's shorter query path. A dry run's
    /// `one_row_per_unit` says whether the file would pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_row_per_person: bool,
    /// Check everything a registration checks (metadata, every row, the privacy unit) and store
    /// nothing: answered 200 with a [`Validation`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Columns of the dataset's latest version this version drops or reads as another type,
    /// named to say the change is meant; without them such a version is refused
    /// (`column_change_unconfirmed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirm_changes: Vec<String>,
}

/// `GET /v1/uploads/{id}`: how far a registration, or a de-identified access request's extract,
/// has got.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadView {
    /// `receiving` (the file is arriving), `reading` (its rows are read, checked and written);
    /// for an extract `comparing` (with the extracts released) and `building`; then `done` or
    /// `failed` (the request's own answer says why).
    pub stage: String,
    /// Bytes of the file received so far (0 for a file imported by path).
    pub bytes_received: u64,
    /// Rows read so far.
    pub rows_read: u64,
}

/// `POST /v1/datasets` with `"dry_run": true`: what the registration would store. Nothing was.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    /// `department.name`.
    pub dataset: String,
    /// The level declared.
    pub level: String,
    /// Rows read, every one valid.
    pub rows: u64,
    /// The columns as they would be stored, in file order.
    pub columns: Vec<QueryColumn>,
    /// With a privacy unit: whether each person is one row (measured on the file).
    pub one_row_per_unit: Option<bool>,
    /// Always `false`: a dry run stores nothing.
    pub stored: bool,
}

/// `POST /v1/datasets/draft`: a metadata document drafted from a sample of the file, for the
/// steward to review and register. Nothing was registered.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DraftView {
    /// The metadata document, as `POST /v1/datasets` takes it (name and description to fill in;
    /// numbers' bounds are the sampled range, to be replaced by the true ones).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Per column, why its tag is suggested.
    pub reasons: Vec<DraftReason>,
    /// The rule that suggests the level.
    pub level_reason: String,
    /// Rows read.
    pub rows_sampled: u64,
}

/// Why one column's tag is suggested.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DraftReason {
    /// The column.
    pub column: String,
    /// The suggested tag.
    pub tag: String,
    /// Why.
    pub reason: String,
}

/// A dataset's dp settings, as declared.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DpMetadata {
    /// Groups one person may count in per answer (default 1; at most 1000). Groups beyond it
    /// are dropped at random for that person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_groups: Option<u64>,
    /// Rows one person may contribute to one group (default 1; at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    /// An epsilon cap per analyst over the budget window, below the level's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon_cap: Option<f64>,
    /// The noise of answers that do not choose theirs: `laplace` (pure ε, the default) or
    /// `gaussian` (ρ-zCDP, more accurate when an analyst asks many questions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<String>,
}

/// One column's declaration.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnMetadata {
    /// `identifier`, `quasi_identifier`, `sensitive` or `attribute`.
    pub tag: String,
    /// Whether this identifier may serve as a join key across departments.
    #[serde(default)]
    pub linkable: bool,
    /// `[lo, hi]` for a numeric column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<[f64; 2]>,
    /// CSV only: `string`, `int64`, `float64`, `boolean`, `date` or `timestamp`; inferred when
    /// absent.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
    /// Quasi-identifiers only: how the column is generalized in deidentified results: `month`,
    /// `year`, `band:<width>`, `prefix:<characters>` or `suppress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generalize: Option<String>,
    /// Every value the column can take, when that list is public (districts, a code table):
    /// dp answers grouped only by such columns release every listed group, noisy, with no
    /// threshold. Not for identifiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_values: Option<Vec<String>>,
    /// The form a CSV date or timestamp column is written in, as strftime (`%d/%m/%Y`,
    /// `%Y%m%d %H:%M`), where the common forms detected from the values would misread it; implies
    /// the type `date` (or `timestamp` with a time of day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl From<DatasetMetadata> for veil_catalog::MetadataInput {
    fn from(m: DatasetMetadata) -> Self {
        Self {
            name: m.name,
            department: m.department,
            level: m.level,
            description: m.description,
            privacy_unit: m.privacy_unit,
            format: m.format,
            sheet: m.sheet,
            encoding: m.encoding,
            delimiter: m.delimiter,
            confirm_changes: m.confirm_changes,
            one_row_per_person: m.one_row_per_person,
            dp: veil_catalog::DpInput {
                max_groups: m.dp.max_groups,
                max_rows: m.dp.max_rows,
                epsilon_cap: m.dp.epsilon_cap,
                noise: m.dp.noise,
            },
            columns: m
                .columns
                .into_iter()
                .map(|(name, c)| {
                    let input = veil_catalog::ColumnInput {
                        tag: c.tag,
                        linkable: c.linkable,
                        bounds: c.bounds.map(|[lo, hi]| (lo, hi)),
                        data_type: c.data_type,
                        generalize: c.generalize,
                        public_values: c.public_values,
                        format: c.format,
                    };
                    (name, input)
                })
                .collect(),
        }
    }
}

/// What the catalogue shows about a dataset: metadata only.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetView {
    /// `department.name`.
    pub id: String,
    /// Owning department.
    pub department: String,
    /// Name.
    pub name: String,
    /// Level code of the current version.
    pub level: String,
    /// The level's name in GB/T 43697-2024.
    pub level_label: String,
    /// Description.
    pub description: String,
    /// Privacy unit column.
    pub privacy_unit: Option<String>,
    /// Rows in the current version: absent for a dataset about people, except to its own
    /// department, administrators and auditors (an exact count told whether one person was in
    /// it, and a version's change who was added or removed).
    pub row_count: Option<u64>,
    /// Rows of the current version beyond each person's `max_groups × max_rows` (`dp`), which
    /// dp and anonymized answers leave out: where it is not 0, somebody has more rows than the
    /// caps declare, and counts and sums are of fewer rows than the data holds. Absent as
    /// `row_count` is, and where it was not measured (a dataset about nobody, a version
    /// registered before it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_over_caps: Option<u64>,
    /// Current version number.
    pub version: i64,
    /// First registered at (RFC 3339).
    pub created_at: String,
    /// Retired at, if retired.
    pub retired_at: Option<String>,
    /// Columns of the current version.
    pub columns: Vec<ColumnView>,
    /// Every version, oldest first.
    pub versions: Vec<VersionView>,
    /// Dp mode's settings.
    pub dp: DpView,
}

/// A dataset's dp settings in the catalogue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DpView {
    /// Groups one person may count in per answer.
    pub max_groups: u64,
    /// Rows one person may contribute to one group.
    pub max_rows: u64,
    /// The epsilon cap per analyst over the budget window (the steward's or the level's);
    /// absent where there is none.
    pub epsilon_cap: Option<f64>,
    /// The noise of answers that do not choose theirs: `laplace` or `gaussian`.
    pub noise: String,
}

/// A column in the catalogue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColumnView {
    /// Name.
    pub name: String,
    /// Arrow type.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Tag.
    pub tag: String,
    /// Linkable identifier.
    pub linkable: bool,
    /// Declared bounds.
    pub bounds: Option<[f64; 2]>,
    /// Generalization in deidentified results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generalize: Option<String>,
    /// Its public domain, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_values: Option<Vec<String>>,
}

/// A version in the catalogue.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    /// Number.
    pub version: i64,
    /// Level.
    pub level: String,
    /// Rows (absent as the dataset's `row_count` is).
    pub row_count: Option<u64>,
    /// Stored size in bytes (absent as `row_count` is: a row more is bytes more).
    pub byte_size: Option<u64>,
    /// Uploaded format.
    pub source_format: String,
    /// Registered by.
    pub registered_by: String,
    /// Registered at (RFC 3339).
    pub registered_at: String,
}

impl DatasetView {
    /// The view without its exact sizes (rows and bytes, of every version), for a caller outside
    /// the department of a dataset about people.
    #[must_use]
    pub fn without_sizes(mut self) -> Self {
        self.row_count = None;
        self.rows_over_caps = None;
        for v in &mut self.versions {
            v.row_count = None;
            v.byte_size = None;
        }
        self
    }
}

impl From<DatasetInfo> for DatasetView {
    fn from(d: DatasetInfo) -> Self {
        let epsilon_cap = d.epsilon_cap();
        let rows_over_caps = d.rows_over_caps();
        Self {
            id: d.dataset.to_string(),
            department: d.dataset.department.to_string(),
            name: d.dataset.name.to_string(),
            level: d.level.as_str().to_owned(),
            level_label: d.level.label_zh().to_owned(),
            description: d.description,
            privacy_unit: d.privacy_unit,
            row_count: Some(d.row_count),
            rows_over_caps,
            version: d.current_version,
            created_at: d.created_at,
            retired_at: d.retired_at,
            dp: DpView {
                max_groups: d.dp.max_groups,
                max_rows: d.dp.max_rows,
                epsilon_cap,
                noise: d.dp.noise.as_str().to_owned(),
            },
            columns: d
                .columns
                .into_iter()
                .map(|c| ColumnView {
                    name: c.name,
                    data_type: c.data_type,
                    tag: c.tag.as_str().to_owned(),
                    linkable: c.linkable,
                    bounds: c.bounds.map(|(lo, hi)| [lo, hi]),
                    generalize: c.generalize.map(|g| g.to_string()),
                    public_values: c.public_values,
                })
                .collect(),
            versions: d
                .versions
                .into_iter()
                .map(|v| VersionView {
                    version: v.version,
                    level: v.level.as_str().to_owned(),
                    row_count: Some(v.row_count),
                    byte_size: Some(v.byte_size),
                    source_format: v.source_format,
                    registered_by: v.registered_by,
                    registered_at: v.registered_at,
                })
                .collect(),
        }
    }
}

/// `GET /healthz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz`: whether this server can take requests, and which part cannot.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok`, or why the catalogue cannot be read.
    pub catalogue: String,
    /// `ok`, or `cannot write` while the audit log's last write failed (every decision waits
    /// for its record, so requests are refused with 503 until it writes again, which it tries
    /// every few seconds by itself).
    pub audit: String,
    /// `ok`, or `low` when the data directory's disk has less than 64 MiB free.
    pub disk: String,
}

/// `POST /v1/access-requests`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccessRequest {
    /// `department.name`.
    pub dataset: String,
    /// `aggregate`, `dp` or `deidentified`.
    pub mode: String,
    /// What the data will be used for (PIPL purpose limitation); shown to the steward.
    pub purpose: String,
    /// RFC 3339 time at which the grant stops working, at most a year ahead.
    pub expires_at: String,
    /// `deidentified` only, and required there: the extract to build.
    #[serde(default)]
    pub extract: Option<ExtractInput>,
}

/// The extract a de-identified access request asks for. Veil builds it at once; the steward
/// decides on the extract and its risk report.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractInput {
    /// The table name to query it by, `extracts.<name>`: lowercase letters, digits and `_`.
    pub name: String,
    /// Other datasets (`department.name`) joined to the request's dataset on their privacy
    /// units, which must be linkable identifiers of one type. Only people found in every one
    /// are released; each dataset's stewards get an access request of their own, and the
    /// extract is readable once every one is approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<String>,
    /// The columns to release, in order. Only the privacy unit among identifiers, as a
    /// pseudonym keyed for this extract. With `join`, a column several datasets have is named
    /// `department.dataset.column` (and released as `column`).
    pub columns: Vec<String>,
    /// Per quasi-identifier: its hierarchy, finest step first (`day`, `month`, `quarter`,
    /// `year`, `years:5`, `band:10`, `prefix:4`, `exact`), each containing the one before; `*`
    /// always ends it. Without one, a default for the column's type.
    #[serde(default)]
    pub hierarchies: std::collections::BTreeMap<String, Vec<String>>,
    /// People per class, at least the level's k (and at least 5).
    #[serde(default)]
    pub k: Option<u64>,
    /// Distinct values of each sensitive column per class (default 2).
    #[serde(default)]
    pub l: Option<u64>,
    /// The largest share of records that may be suppressed (default 0.05, at most 0.5).
    #[serde(default)]
    pub max_suppression: Option<f64>,
}

/// An extract, as its access request shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExtractView {
    /// Queried as `extracts.<name>` once approved.
    pub name: String,
    /// The specification as asked for.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// The source dataset's version it was built from; later versions do not change it.
    pub source_version: i64,
    /// Rows released; like the report, shown to stewards and auditors, and to the analyst once
    /// the request is approved (before, it would count the source for nobody's approval).
    pub rows: Option<u64>,
    /// The risk and utility report: class sizes, prosecutor risk, records suppressed, the
    /// generalization chosen and information loss per column, and warnings (extracts of other
    /// versions of the dataset already released). Shown to stewards and auditors, and to the
    /// analyst once the request is approved.
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// Built at (RFC 3339).
    pub created_at: String,
    /// The other datasets it is joined from, each with the access request its stewards decide.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ExtractPartView>,
}

/// Another dataset an extract is joined from.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExtractPartView {
    /// Its access request, decided by this dataset's stewards.
    pub request: String,
    /// The dataset.
    pub dataset: String,
    /// Its version the extract was built from.
    pub source_version: i64,
    /// `pending`, `approved`, `rejected` or `revoked`.
    pub state: String,
}

impl ExtractView {
    /// This view as a user of `department` sees it (`None`: an auditor or administrator, who
    /// sees all): a joined extract's report keeps the per-dataset figures (`sources`: each
    /// dataset's records, and those of people not in every dataset) of that department's
    /// datasets only. An exact count of another department's records, and of those its join
    /// left out, told an analyst (once approved) and a partner's steward whether a person is
    /// in that department's dataset: a partner dataset of everybody but the target, one
    /// ordinary join, 28 of 28 (a red team, 2026-12-04).
    #[must_use]
    pub fn seen_by(mut self, department: Option<&str>) -> Self {
        if let (Some(department), Some(sources)) =
            (department, self.report.as_mut().and_then(|r| r.get_mut("sources")).and_then(|s| s.as_array_mut()))
        {
            let prefix = format!("{department}.");
            sources.retain(|s| s["dataset"].as_str().is_some_and(|d| d.starts_with(&prefix)));
        }
        self
    }

    /// The view of `e`, with its report when `with_report`.
    pub fn new(e: veil_catalog::ExtractInfo, with_report: bool) -> Self {
        let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        Self {
            name: e.name,
            spec: json(&e.spec),
            source_version: e.source_version,
            rows: with_report.then_some(e.rows),
            report: with_report.then(|| json(&e.report)),
            created_at: e.created_at,
            parts: e
                .parts
                .into_iter()
                .map(|p| ExtractPartView {
                    request: p.request_id,
                    dataset: p.dataset.to_string(),
                    source_version: p.source_version,
                    state: p.state.as_str().to_owned(),
                })
                .collect(),
        }
    }
}

/// `POST /v1/access-requests/{id}/reject` and `/revoke`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionReason {
    /// Why, for the analyst and the audit trail.
    pub reason: String,
}

/// `POST /v1/access-requests/{id}/revise`: a steward makes a pending extract stricter before
/// deciding on it; Veil builds it again and the request stays pending with the new report.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtractRevisionInput {
    /// A higher `k` than the extract meets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u64>,
    /// A higher `l` than the extract meets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<u64>,
    /// A lower largest share of suppressed records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_suppression: Option<f64>,
    /// Why, for the analyst and the audit trail.
    pub reason: String,
}

/// An access request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessRequestView {
    /// Id.
    pub id: String,
    /// The analyst.
    pub user: String,
    /// Their department.
    pub department: String,
    /// The dataset.
    pub dataset: String,
    /// The mode.
    pub mode: String,
    /// The purpose.
    pub purpose: String,
    /// When a grant stops working (RFC 3339).
    pub expires_at: String,
    /// `pending`, `approved`, `rejected` or `revoked`.
    pub state: String,
    /// Made at (RFC 3339).
    pub created_at: String,
    /// The steward who decided.
    pub decided_by: Option<String>,
    /// Decided at (RFC 3339).
    pub decided_at: Option<String>,
    /// The reason given with a rejection or revocation.
    pub reason: Option<String>,
    /// A de-identified request's extract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExtractView>,
}

impl From<veil_catalog::AccessRequest> for AccessRequestView {
    fn from(r: veil_catalog::AccessRequest) -> Self {
        let expires_at = time::OffsetDateTime::from_unix_timestamp(r.expires_at)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        Self {
            id: r.id,
            user: r.user.to_string(),
            department: r.department.to_string(),
            dataset: r.dataset.to_string(),
            mode: r.mode.as_str().to_owned(),
            purpose: r.purpose,
            expires_at,
            state: r.state.as_str().to_owned(),
            created_at: r.created_at,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            reason: r.reason,
            extract: None,
        }
    }
}

/// `GET /v1/datasets/{dataset}/access`: what the caller may do with a dataset.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    /// The dataset.
    pub dataset: String,
    /// Its level.
    pub level: String,
    /// One decision per result mode.
    pub modes: Vec<ModeAccess>,
}

/// The decision for one mode.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModeAccess {
    /// The mode.
    pub mode: String,
    /// Whether the caller may query in it.
    pub allowed: bool,
    /// The rule that decided.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// `POST /v1/admin/policy/reload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReloadView {
    /// Policy lines now in force.
    pub lines: usize,
}

/// `POST /v1/query`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only SQL query over `department.dataset` tables.
    pub sql: String,
    /// `aggregate` (the default), `deidentified` or `dp`.
    #[serde(default = "aggregate")]
    pub mode: String,
    /// Decide and explain without running.
    #[serde(default)]
    pub dry_run: bool,
    /// `dp` mode: the epsilon the query spends with discrete Laplace noise (default: a tenth of
    /// the smallest cap among its datasets, at most 1).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// `dp` mode: spend ρ (zero-concentrated dp) with discrete Gaussian noise instead of ε.
    #[serde(default)]
    pub rho: Option<f64>,
    /// `dp` mode: `laplace` or `gaussian`, with an accuracy or for the default budget (without
    /// it: the noise the datasets' stewards chose, Laplace unless all chose Gaussian).
    #[serde(default)]
    pub noise: Option<String>,
    /// `dp` mode: instead of ε or ρ, the 95% half-width each named noisy column needs
    /// (`{"n": 5}`); the query spends the least ε or ρ that gives them all.
    #[serde(default)]
    pub accuracy: Option<std::collections::BTreeMap<String, f64>>,
}

fn aggregate() -> String {
    "aggregate".to_owned()
}

/// An output column.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueryColumn {
    /// Name.
    pub name: String,
    /// Arrow type.
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A rule that shaped the answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryRule {
    /// Stable code: `min_group_size`, `linkable_join`, `pseudonymize`, `policy_allow`, …
    pub code: String,
    /// What it did to this query.
    pub detail: String,
}

/// The answer to `POST /v1/query` (JSON form; the Arrow IPC and Parquet forms carry the rest
/// in their schema metadata, the CSV form in the `x-veil-report` header).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct QueryResponse {
    /// Whether the query was only decided (`dry_run`), not run.
    pub dry_run: bool,
    /// Output columns.
    pub columns: Vec<QueryColumn>,
    /// Rows, each in column order.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The level the query was judged at (the strictest of its datasets).
    pub level: String,
    /// The minimum number of distinct people per released group.
    pub k: u64,
    /// The rules that applied and why.
    pub rules: Vec<QueryRule>,
    /// The reference of this query's audit record (also the `x-veil-audit-id` header): the
    /// request id it is recorded under; an auditor finds it with `GET /audit?request_id=`. A
    /// random id, so that the gap between two answers does not count other people's actions.
    pub audit_id: String,
    /// `dp` mode: what the answer cost and how precise it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp: Option<DpAnswer>,
    /// `aggregate` mode over people: how noisy the anonymized values are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymized: Option<AnonymizedAnswer>,
}

/// How noisy an anonymized answer's values are (not differential privacy: no budget).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AnonymizedAnswer {
    /// For each output column that copies an anonymized count or sum, when the query and the
    /// declared bounds alone bound its noise: the most its standard deviation can be (the same
    /// in every row; never a figure read from the data). Empty when the answer reworks the
    /// released groups (an aggregate or window over them).
    pub noise_sd: Vec<NoiseSd>,
    /// The output columns (copies of a count of rows where a person may have several, of a
    /// sum or of an average) whose values flattening may have moved beyond their noise: the
    /// largest contributions are brought down to the next few's average (and, for a sum that
    /// may be below zero, the lowest up), so where a few people hold most of a group's rows
    /// or total, the answer is lower than the data's. From the query alone. Empty when the
    /// answer reworks the released groups.
    #[serde(default)]
    pub flattened: Vec<String>,
    /// The datasets whose rows per person the query's joins capped: counts of rows and sums
    /// are of at most `rows` rows a person from each. From the declarations alone.
    #[serde(default)]
    pub rows_capped: Vec<RowsCapped>,
}

/// A dataset whose rows per person an anonymized join capped.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RowsCapped {
    /// `department.dataset`.
    pub dataset: String,
    /// The most rows a person counts with from it (its `max_groups × max_rows`).
    pub rows: u64,
}

/// The noise of one anonymized output column.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NoiseSd {
    /// Output column.
    pub column: String,
    /// The most the standard deviation of its noise can be.
    pub sd_at_most: f64,
}

/// What a dp answer cost and how precise its values are.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DpAnswer {
    /// `laplace` (pure ε) or `gaussian` (ρ-zCDP).
    pub noise: String,
    /// With Laplace noise: the epsilon this query spends (nothing charged when `replayed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// With Gaussian noise: the ρ this query spends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rho: Option<f64>,
    /// Delta spent on releasing groups whose presence depends on people (0 without groups, or
    /// with groups from public values only).
    pub delta: f64,
    /// How many numbers per group share epsilon or rho equally.
    pub measurements: usize,
    /// The noisy count of people a group needed to be released, if the answer has groups.
    pub threshold: Option<f64>,
    /// A group of at least this many people is released with probability at least 95% (one of
    /// `threshold` people about half the time; fewer, rarely): which groups would likely be
    /// withheld, known before the query runs, so a dry run shows it; no group is counted.
    pub released_from: Option<f64>,
    /// Whether this is the recorded answer of an identical earlier query (nothing charged).
    pub replayed: bool,
    /// For each output column that is a noisy aggregate: the 95% interval of each row's value.
    pub intervals: Vec<NoisyColumn>,
    /// For each noisy count or sum column: the half-width of its 95% interval, the same in
    /// every row and known before the query runs (a dry run shows it).
    pub half_widths: Vec<HalfWidth>,
    /// The budget of each dataset after this query.
    pub budget: Vec<BudgetView>,
}

/// The 95% half-width of one noisy output column.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HalfWidth {
    /// Output column.
    pub column: String,
    /// Half the width of every row's 95% interval.
    pub half_width: f64,
}

/// The 95% intervals of one noisy output column.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NoisyColumn {
    /// Output column.
    pub column: String,
    /// `[low, high]` per row, in row order.
    pub ci95: Vec<[f64; 2]>,
}

/// An analyst's privacy budget on one dataset (`GET /v1/budget` and dp answers).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetView {
    /// `department.name`.
    pub dataset: String,
    /// Level.
    pub level: String,
    /// Epsilon cap over the window; absent where the level sets none.
    pub cap: Option<f64>,
    /// Epsilon the answers within the window guarantee together (basic or zCDP composition,
    /// whichever is smaller).
    pub spent: f64,
    /// Epsilon left; absent where there is no cap.
    pub left: Option<f64>,
    /// Delta of that guarantee: group selections', plus converting ρ where it was.
    pub delta_spent: f64,
    /// Most delta of group selection per window.
    pub delta_cap: f64,
    /// ρ spent by answers with Gaussian noise within the window.
    pub rho_spent: f64,
    /// Charged queries within the window.
    pub queries: u64,
    /// Length of the rolling window, days.
    pub window_days: u32,
}

/// One page of audit records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Records, oldest first: `seq`, `time`, `prev`, `action`, `decision`, `actor`, `datasets`,
    /// `mode`, `rule`, `detail`, `sql`, `sql_sha256`, `rows`, `suppressed_groups`, `epsilon`,
    /// `duration_ms`, `hash`, as present.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<u64>,
    /// Lines of the log that could not be read as records (run verify).
    pub unreadable: u64,
}

/// The outcome of verifying the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditVerifyView {
    /// Every record verified.
    pub ok: bool,
    /// The report in words, as `veil audit verify` prints it.
    pub summary: String,
    /// The public key the checkpoints were checked with (hex), for offline verification.
    pub public_key: String,
    /// Its short id.
    pub key_id: String,
    /// Counts, head, signed range and the first problem, if any.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}
