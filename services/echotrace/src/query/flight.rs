//! `echotrace serve-sql`: the stored datasets over Arrow Flight SQL, for DBeaver (the Flight SQL
//! JDBC driver), Python and R (ADBC) and any other Flight SQL client.
//!
//! [`serve`] answers on one gRPC port with the same tables and functions as `echotrace query`
//! ([`super::register`]). It is read-only: statements that define tables, write files or change
//! settings are refused. It keeps no state between calls: a statement's ticket, and a prepared
//! statement's handle, are its SQL, planned again when the result is fetched. Every statement gets
//! a session built afresh over the data directory, so files flushed by a running `run` since the
//! last query are read; only the Parquet footers of files already seen are cached (the files are
//! written once and never changed).
//!
//! Supported calls: statements (`CommandStatementQuery`) and prepared statements without parameters
//! (ADBC prepares every `cursor.execute`), and the catalog calls clients use to list and describe
//! the tables (`GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes`, `GetSqlInfo`).
//!
//! Authentication (`flight/auth.rs`): with a token configured, every call must carry
//! `authorization: Bearer <token>` or, for clients that log in with a user name and password (the
//! handshake of the JDBC driver), `Basic` credentials whose password is the token; the handshake
//! then answers with the bearer header. There is no TLS in the server: on a network, TLS
//! terminates at a proxy in front of it.

mod auth;

use super::{QueryError, register};
use crate::shutdown::Shutdown;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Schema, SchemaRef};
use auth::Authenticator;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::TableType;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// How long a call may take to answer (a query's plan and first response).
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// Calls served at once on one connection.
const MAX_CONCURRENT_CALLS: usize = 16;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Listening beyond this host without a token would open the datasets to the network.
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// The data directory is not an output directory.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("Flight SQL server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the datasets of `data_dir` on `listen` until `shutdown` fires. A `token`, when given, is
/// required of every call, and is required to listen on an address other than loopback.
pub async fn serve(
    data_dir: &Path,
    listen: SocketAddr,
    token: Option<String>,
    mut shutdown: Shutdown,
) -> Result<(), ServeError> {
    crate::access::require_token_beyond_loopback(listen, token.as_deref(), "query")?;
    let service = FlightSqlServer::new(data_dir, token.clone());
    // Fails now, not at the first query, when the directory holds no dataset.
    service.session().await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|source| ServeError::Bind { listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { listen, source })?;
    tracing::info!(listen = %bound, data = %data_dir.display(), token = token.is_some(), "serving Flight SQL");
    let authenticator = Authenticator::new(token.as_deref());
    Server::builder()
        // An answer's plan must be ready within the timeout (its batches then stream); a client
        // runs a few statements at once per connection, and HTTP/2 streams are capped.
        .timeout(QUERY_TIMEOUT)
        .concurrency_limit_per_connection(MAX_CONCURRENT_CALLS)
        .max_concurrent_streams(Some(MAX_CONCURRENT_CALLS as u32))
        .add_service(FlightServiceServer::with_interceptor(service, authenticator))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move { shutdown.recv().await })
        .await?;
    Ok(())
}

/// The Flight SQL service over one data directory.
struct FlightSqlServer {
    data_dir: PathBuf,
    /// Shared by every query's session: it holds the Parquet footer cache.
    runtime: Arc<RuntimeEnv>,
    sql_info: SqlInfoData,
    /// Sent back by the handshake.
    token: Option<String>,
}

type DoGetStream = <FlightSqlServer as FlightService>::DoGetStream;

impl FlightSqlServer {
    /// A service over `data_dir`; `token` is what the handshake hands back (checking it is the
    /// [`Authenticator`]'s job).
    fn new(data_dir: &Path, token: Option<String>) -> Self {
        // No listing cache: DataFusion's keeps a directory's listing for the life of the runtime, and
        // the datasets grow while `run` writes.
        let cache = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime =
            RuntimeEnvBuilder::new().with_cache_manager(cache).build_arc().expect("the default runtime builds");
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "echotrace");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        let sql_info = info.build().expect("the server's SqlInfo values are valid");
        FlightSqlServer { data_dir: data_dir.to_owned(), runtime, sql_info, token }
    }

    /// A session over the files the directory holds now.
    async fn session(&self) -> Result<SessionContext, QueryError> {
        let context = SessionContext::new_with_config_rt(SessionConfig::new(), self.runtime.clone());
        register(&context, &self.data_dir).await?;
        Ok(context)
    }

    /// Plans a read-only statement.
    async fn plan(&self, sql: &str) -> Result<DataFrame, QueryError> {
        tracing::debug!(sql, "Flight SQL statement");
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        Ok(self.session().await?.sql_with_options(sql, read_only).await?)
    }

    /// The result's schema and a ticket that runs it.
    async fn statement_info(&self, sql: &str, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
        let schema = portable_schema(self.plan(sql).await?.schema().as_arrow());
        let ticket = TicketStatementQuery { statement_handle: sql.to_owned().into() };
        flight_info(&ticket, &schema, descriptor)
    }

    /// Runs a statement and streams its result.
    async fn execute(&self, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let frame = self.plan(sql).await?;
        let schema = portable_schema(frame.schema().as_arrow());
        let batches = frame.execute_stream().await.map_err(QueryError::from)?;
        let target = schema.clone();
        let batches = batches.map(move |batch| match batch {
            Ok(batch) => portable_batch(batch, &target).map_err(FlightError::Arrow),
            Err(error) => Err(FlightError::Tonic(Box::new(QueryError::from(error).into()))),
        });
        Ok(encode(schema, batches))
    }
}

/// The SQL a ticket or handle carries.
fn sql_of(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes).map_err(|_| Status::invalid_argument("a statement handle must be UTF-8 SQL"))
}

/// A [`FlightInfo`] with one endpoint whose ticket is `command`.
fn flight_info(
    command: &impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(arrow_status)?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// Streams `batches` to the client, `schema` first.
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// One metadata result, built from `batch`.
fn encode_one(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch?;
    Ok(encode(schema, futures::stream::iter([Ok(batch)])))
}

fn arrow_status(error: ArrowError) -> Status {
    Status::internal(error.to_string())
}

impl From<QueryError> for Status {
    /// DataFusion's message, which says where in the SQL, under the code that says whose fault it
    /// is: the statement's (`INVALID_ARGUMENT`) or the server's (`INTERNAL`, also logged, as the
    /// operator has to fix it: a corrupt file, a full disk).
    fn from(error: QueryError) -> Status {
        let message = error.to_string();
        match &error {
            QueryError::NoData(_) => Status::failed_precondition(message),
            QueryError::Layout { .. } => {
                tracing::warn!("Flight SQL query refused: {message}");
                Status::failed_precondition(message)
            }
            QueryError::DataFusion(error) => match error.find_root() {
                DataFusionError::SQL(..)
                | DataFusionError::Plan(_)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_)
                | DataFusionError::Configuration(_) => Status::invalid_argument(message),
                DataFusionError::ArrowError(error, _)
                    if matches!(
                        **error,
                        ArrowError::DivideByZero
                            | ArrowError::ArithmeticOverflow(_)
                            | ArrowError::CastError(_)
                            | ArrowError::ComputeError(_)
                            | ArrowError::InvalidArgumentError(_)
                            | ArrowError::ParseError(_)
                    ) =>
                {
                    Status::invalid_argument(message)
                }
                DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
                _ => {
                    tracing::warn!("Flight SQL query failed: {message}");
                    Status::internal(message)
                }
            },
        }
    }
}

/// The schema results are sent with: view types, which DataFusion reads Parquet strings as, become
/// their plain counterparts, because not every client reads views (the JDBC driver of DBeaver fails
/// with "Unsupported ArrowType Utf8View", apache/arrow-java#807).
fn portable_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema.fields().iter().map(portable_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn portable_field(field: &FieldRef) -> FieldRef {
    let data_type = portable_type(field.data_type());
    if &data_type == field.data_type() {
        field.clone()
    } else {
        Arc::new(Field::clone(field).with_data_type(data_type))
    }
}

fn portable_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(item) => DataType::List(portable_field(item)),
        DataType::LargeList(item) => DataType::LargeList(portable_field(item)),
        DataType::FixedSizeList(item, size) => DataType::FixedSizeList(portable_field(item), *size),
        DataType::ListView(item) => DataType::List(portable_field(item)),
        DataType::LargeListView(item) => DataType::LargeList(portable_field(item)),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(portable_field).collect()),
        DataType::Map(entries, sorted) => DataType::Map(portable_field(entries), *sorted),
        other => other.clone(),
    }
}

/// `batch` with its columns cast to `schema`'s types, where they differ.
fn portable_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| match column.data_type() == field.data_type() {
            true => Ok(column.clone()),
            false => arrow_cast::cast(column, field.data_type()),
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    /// Logging in with a user name and password: the [`Authenticator`] has already checked the
    /// password against the token; the answer carries the token to send from then on.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let token = self.token.clone().unwrap_or_default();
        let answer = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !token.is_empty() {
            let bearer = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.statement_info(&query.query, request.into_inner()).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.statement_info(sql_of(&query.prepared_statement_handle)?, request.into_inner()).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&query, &query.into_builder().schema(), request.into_inner())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&query, &query.clone().into_builder().schema(), request.into_inner())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&query, &query.clone().into_builder().schema(), request.into_inner())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&query, &query.into_builder().schema(), request.into_inner())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        flight_info(&query, &query.clone().into_builder(&self.sql_info).schema(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(sql_of(&ticket.statement_handle)?).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.execute(sql_of(&query.prepared_statement_handle)?).await
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for catalog in self.session().await?.catalog_names() {
            builder.append(catalog);
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session().await?;
        let mut builder = query.into_builder();
        for name in session.catalog_names() {
            let Some(catalog) = session.catalog(&name) else { continue };
            for schema in catalog.schema_names() {
                builder.append(&name, schema);
            }
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = self.session().await?;
        let mut builder = query.into_builder();
        for catalog_name in session.catalog_names() {
            let Some(catalog) = session.catalog(&catalog_name) else { continue };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else { continue };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await.map_err(QueryError::from)? else { continue };
                    let kind = match table.table_type() {
                        TableType::Base => "TABLE",
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    builder.append(
                        &catalog_name,
                        &schema_name,
                        &table_name,
                        kind,
                        &portable_schema(&table.schema()),
                    )?;
                }
            }
        }
        encode_one(builder.schema(), builder.build())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        builder.append("TABLE");
        encode_one(builder.schema(), builder.build())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let builder = query.into_builder(&self.sql_info);
        encode_one(builder.schema(), builder.build())
    }

    /// The handle is the SQL itself; the result's schema comes from planning it.
    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = portable_schema(self.plan(&query.query).await?.schema().as_arrow());
        let IpcMessage(dataset_schema) =
            SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).try_into().map_err(arrow_status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    /// Nothing to release: the server keeps no statement.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    /// The server's [`SqlInfo`] is fixed when it starts.
    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_sent_as_plain_types() {
        let item = Arc::new(Field::new("item", DataType::Utf8View, true));
        let schema = Schema::new(vec![
            Field::new("text", DataType::Utf8View, false),
            Field::new("platforms", DataType::List(item), true),
            Field::new("n", DataType::Int64, false),
        ]);
        let portable = portable_schema(&schema);
        assert_eq!(portable.field(0).data_type(), &DataType::Utf8);
        assert!(!portable.field(0).is_nullable());
        assert_eq!(portable.field(1).data_type(), &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))));
        assert_eq!(portable.field(2).data_type(), &DataType::Int64);
        let column: ArrayRef = Arc::new(arrow_array::StringViewArray::from(vec!["a", "b"]));
        let batch = RecordBatch::try_from_iter([("text", column)]).unwrap();
        let target = portable_schema(batch.schema_ref());
        let sent = portable_batch(batch, &target).unwrap();
        assert_eq!(sent.column(0).data_type(), &DataType::Utf8);
        let list_view = DataType::ListView(Arc::new(Field::new("item", DataType::Utf8View, true)));
        let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        assert_eq!(portable_type(&list_view), list);
        assert!(arrow_cast::can_cast_types(&list_view, &list));
    }
}
