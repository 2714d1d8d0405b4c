//! SQL over Arrow Flight SQL, for the tools analysts already use: ADBC (Python, R, Go),
//! the Flight SQL JDBC driver (DBeaver, Grafana's JDBC sources), pyarrow.
//!
//! The same engine, limits and read-only rule as `POST /v1/sql`; what Flight SQL adds is a
//! catalog clients can browse (catalog `datafusion`, schema `public`, the tables with their
//! columns) and prepared statements with bound parameters (`$1`, or `?` as JDBC writes them).
//!
//! Statement tickets carry the SQL itself, so any instance behind a load balancer can answer
//! a ticket another one issued. Prepared statements are state kept by the instance that
//! created them (their parameters arrive in a separate call): a load balancer must keep a
//! client on one instance for them (gRPC keeps one connection per client, so this holds
//! unless connections are balanced per request).
//!
//! Results are sent with dictionary columns expanded to their values, as the schema in the
//! flight info says: some clients (the JDBC driver among them) do not read Arrow
//! dictionaries.
//!
//! Every call is checked against the service's tokens ([`Access`]) before it reaches the
//! service: the `authorization` header holds `Bearer <token>`, or `Basic` with the token as
//! the password (what clients given a user and password send); the handshake answers the
//! latter with the bearer header, as Flight's authentication expects. Statements run in the
//! token's scope; a prepared statement is usable only with the token that prepared it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::common::ScalarValue;
use futures::{Stream, TryStreamExt, stream};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::access::{Access, Grant, Scope, token_of};
use crate::engine::{CATALOG, QueryEngine, SCHEMA, StatementShape};
use crate::error::QueryError;

/// The default address of the Flight SQL listener.
pub const DEFAULT_FLIGHT_LISTEN: &str = "127.0.0.1:8462";

/// Prepared statements kept per instance at most; the oldest are dropped beyond it (a client
/// that uses one after that gets a message saying so). Each is a statement's text and its
/// bound parameters: a few hundred bytes.
const MAX_PREPARED_STATEMENTS: usize = 10_000;

/// The Flight SQL service over a [`QueryEngine`].
pub struct FlightSqlServer {
    engine: Arc<QueryEngine>,
    access: Arc<Access>,
    prepared: Mutex<PreparedStatements>,
    sql_info: SqlInfoData,
}

impl std::fmt::Debug for FlightSqlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServer")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// A statement prepared by a client, with the parameters it last bound.
#[derive(Debug, Clone)]
struct PreparedStatement {
    sql: String,
    /// The token that prepared it; no other may use it.
    owner: Arc<str>,
    /// The result's schema as announced when it was prepared (files come and go, the
    /// tables' schemas do not), so a flight info does not plan the statement again.
    columns: SchemaRef,
    params: Vec<ScalarValue>,
}

#[derive(Debug)]
struct PreparedStatements {
    by_handle: HashMap<Vec<u8>, PreparedStatement>,
    /// Handles from the oldest, to drop the oldest first.
    order: VecDeque<Vec<u8>>,
    /// Makes handles unique within this process.
    created: u64,
    /// Makes handles unlikely to match another instance's (random per process).
    nonce: u64,
}

impl PreparedStatements {
    fn new() -> Self {
        use std::hash::BuildHasher;
        Self {
            by_handle: HashMap::new(),
            order: VecDeque::new(),
            created: 0,
            nonce: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }

    fn insert(&mut self, sql: String, owner: Arc<str>, columns: SchemaRef) -> Vec<u8> {
        self.created += 1;
        let handle = format!("tlsrpt-prepared-{:016x}-{}", self.nonce, self.created).into_bytes();
        while self.by_handle.len() >= MAX_PREPARED_STATEMENTS {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.by_handle.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back(handle.clone());
        self.by_handle.insert(
            handle.clone(),
            PreparedStatement {
                sql,
                owner,
                columns,
                params: Vec::new(),
            },
        );
        handle
    }
}

impl FlightSqlServer {
    /// The service over `engine`, for the clients `access` lets in.
    pub fn new(engine: Arc<QueryEngine>, access: Arc<Access>) -> Self {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "tlsrpt");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        // The Arrow columnar format version the IPC messages follow.
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        let sql_info = info
            .build()
            .expect("the SqlInfo values above have the types Flight SQL defines");
        Self {
            engine,
            access,
            prepared: Mutex::new(PreparedStatements::new()),
            sql_info,
        }
    }

    /// Serves on `listener` until `shutdown` resolves; over TLS with `tls` (a certificate
    /// chain and its key).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<Identity>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let access = Arc::clone(&self.access);
        // Before any method: a call that is not let in never reaches the service, whichever
        // method it names, and the grant travels with the request to the method.
        let check = move |mut request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .map(MetadataValue::as_bytes);
            match access.authorize(header) {
                Ok(grant) => {
                    request.extensions_mut().insert(grant);
                    Ok(request)
                }
                Err(denied) => Err(Status::unauthenticated(denied.to_string())),
            }
        };
        let mut server = Server::builder();
        if let Some(identity) = tls {
            server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
        }
        server
            .add_service(FlightServiceServer::with_interceptor(self, check))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }

    fn statements(&self) -> std::sync::MutexGuard<'_, PreparedStatements> {
        self.prepared
            .lock()
            .expect("the prepared statements lock is not poisoned")
    }

    /// The prepared statement `handle`, if `grant` prepared it.
    fn prepared(&self, handle: &[u8], grant: &Grant) -> Result<PreparedStatement, Status> {
        self.statements()
            .by_handle
            .get(handle)
            .filter(|statement| statement.owner == grant.name)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(
                    "no such prepared statement on this server: it was closed, this server \
                     restarted or dropped it (it keeps the newest 10,000), or it was prepared \
                     on another instance; prepare it again",
                )
            })
    }

    /// Runs a statement and streams its result.
    async fn answer(
        &self,
        scope: &Scope,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let result = self
            .engine
            .sql_in(scope, sql, params)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(batches_response(
            Arc::clone(result.schema()),
            result.batches().to_vec(),
        ))
    }

    async fn describe(&self, scope: &Scope, sql: &str) -> Result<StatementShape, Status> {
        self.engine
            .describe_in(scope, sql)
            .await
            .map_err(|e| status_of(&e))
    }
}

/// What the request's token grants, as the check in [`FlightSqlServer::serve`] found it.
fn grant_of<T>(request: &Request<T>) -> Result<Grant, Status> {
    request.extensions().get::<Grant>().cloned().ok_or_else(|| {
        // Only a server built without the check could get here: refuse rather than guess.
        Status::internal("the call was not checked against the service's tokens")
    })
}

/// A flight info whose one endpoint's ticket is `ticket` (a Flight SQL command, packed).
fn flight_info(
    schema: &Schema,
    ticket: impl ProstMessageExt,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(ticket.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("encoding the result's schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// `batches` as a stream of Flight data, dictionaries expanded.
fn batches_response(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Response<<FlightSqlServer as FlightService>::DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Hydrate)
        .build(stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// One metadata batch as a response.
fn metadata_response(
    batch: Result<RecordBatch, FlightError>,
) -> Result<Response<<FlightSqlServer as FlightService>::DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("building the catalog: {e}")))?;
    Ok(batches_response(batch.schema(), vec![batch]))
}

/// The schema as clients receive it: dictionary types replaced by their value types.
fn hydrated(schema: &Schema) -> Schema {
    fn hydrated_field(field: &FieldRef) -> FieldRef {
        let data_type = match field.data_type() {
            DataType::Dictionary(_, values) => values.as_ref().clone(),
            DataType::List(item) => DataType::List(hydrated_field(item)),
            DataType::LargeList(item) => DataType::LargeList(hydrated_field(item)),
            other => other.clone(),
        };
        Arc::new(Field::clone(field).with_data_type(data_type))
    }
    Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(hydrated_field)
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    )
}

fn ipc_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("encoding a schema: {e}"))
        })?;
    Ok(bytes)
}

/// The gRPC status for a statement that got no answer; the message is the same as over HTTP.
fn status_of(error: &QueryError) -> Status {
    let message = error.to_string();
    match error {
        QueryError::Invalid { .. } | QueryError::Execution { .. } => {
            Status::invalid_argument(message)
        }
        QueryError::ReadOnly { .. } => Status::permission_denied(message),
        QueryError::TooManyRows { .. } => Status::out_of_range(message),
        QueryError::Timeout { .. } => Status::deadline_exceeded(message),
        QueryError::ResourcesExhausted { .. } => Status::resource_exhausted(message),
        QueryError::Storage { .. }
        | QueryError::Internal { .. }
        | QueryError::Output { .. }
        | QueryError::Io(_) => {
            warn!(code = error.code(), %message, "A Flight SQL query failed.");
            Status::internal(message)
        }
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Status> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument(format!("the {what} is not UTF-8 text")))
}

/// The parameters of one execution from the batches a client bound: one row, a column per
/// parameter in order.
fn parameters_of(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, Status> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "{rows} rows of parameters were bound; a query takes one (run it once per row)"
        )));
    }
    let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) else {
        return Ok(Vec::new());
    };
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(format!("reading the bound parameters: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    /// Flight's authentication: the client sends its credentials (here `Basic` with the
    /// token as the password, checked before the call got here) and is given the bearer
    /// header to send from then on.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|header| token_of(header.as_bytes()));
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().unwrap_or_default().into_bytes().into(),
        };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(stream::iter([Ok(answer)])));
        if let Some(token) = token {
            let bearer = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::invalid_argument("the token is not header text"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let grant = grant_of(&request)?;
        let shape = self.describe(&grant.scope, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        flight_info(&hydrated(&shape.columns), ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let grant = grant_of(&request)?;
        let sql = utf8(&ticket.statement_handle, "statement ticket")?;
        self.answer(&grant.scope, &sql, Vec::new()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let grant = grant_of(&request)?;
        let shape = self.describe(&grant.scope, &query.query).await?;
        let columns = Arc::new(hydrated(&shape.columns));
        let dataset_schema = ipc_schema(&columns)?;
        let handle = self
            .statements()
            .insert(query.query, Arc::clone(&grant.name), columns);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema: ipc_schema(&shape.parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let handle = query.prepared_statement_handle;
        // Fail early on an unknown handle, before reading the parameters.
        self.prepared(&handle, &grant_of(&request)?)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading the bound parameters: {e}")))?;
        let params = parameters_of(&batches)?;
        let mut prepared = self.statements();
        match prepared.by_handle.get_mut(handle.as_ref()) {
            Some(statement) => statement.params = params,
            None => return Err(Status::not_found("the prepared statement was closed")),
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let statement = self.prepared(&query.prepared_statement_handle, &grant_of(&request)?)?;
        flight_info(&statement.columns, query, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let grant = grant_of(&request)?;
        let statement = self.prepared(&query.prepared_statement_handle, &grant)?;
        self.answer(&grant.scope, &statement.sql, statement.params)
            .await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let handle = query.prepared_statement_handle.as_ref();
        // Another token's statement is left alone (and its existence not confirmed).
        if self.prepared(handle, &grant_of(&request)?).is_err() {
            return Ok(());
        }
        let mut prepared = self.statements();
        prepared.by_handle.remove(handle);
        prepared.order.retain(|h| h.as_slice() != handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        metadata_response(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        metadata_response(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for table in self.engine.tables().await.map_err(|e| status_of(&e))? {
            builder
                .append(
                    CATALOG,
                    SCHEMA,
                    &table.name,
                    table.kind.as_str(),
                    &hydrated(&table.columns),
                )
                .map_err(|e| Status::internal(format!("building the table list: {e}")))?;
        }
        metadata_response(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        builder.append("VIEW");
        metadata_response(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        flight_info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        metadata_response(query.into_builder(&self.sql_info).build())
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "this server does not answer {}",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
