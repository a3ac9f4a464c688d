//! `lineage(post_id)`: a post's chain of derivation up to its cascade's root, as a table.
//!
//! ```sql
//! SELECT depth, post_id, parent_kind, platform, author_handle, text FROM lineage('x:1867') ORDER BY depth
//! ```
//!
//! Row 0 is the post itself, row 1 its primary parent, and so on up to the root; when a parent was
//! referenced (a repost of a post never ingested) but is not stored, its row has only `depth` and
//! `post_id`. The other columns are the `posts` columns of the same names. A post that is not
//! stored has no lineage: no rows.
//!
//! The recursive CTE in `docs/queries.md` gives the same rows, but DataFusion evaluates each level
//! as a join against the whole `posts` table: 26 levels over 10M compacted posts took 88 s, where this
//! function took 0.26 s (`benches/README.md`, "Analyst queries"). It looks
//! posts up by literal ids instead, which the bloom filters on `post_id` and the statistics on
//! `cascade_id` (compacted files are sorted by it) narrow to a few row groups: one lookup of the
//! post, one read of its cascade's `(post_id, parent_id)` pairs to walk the chain in memory (again
//! for each cascade a merged chain crosses into), and one read of the chain's rows.

use arrow_array::{Array, ArrayRef, RecordBatch, StringViewArray, UInt32Array, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::arrow::compute::interleave;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::cast::as_string_view_array;
use datafusion::common::{Result, ScalarValue, internal_datafusion_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionContext, col, lit};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The `posts` columns a lineage row carries, after `depth`.
const COLUMNS: [&str; 11] = [
    "post_id",
    "parent_id",
    "parent_kind",
    "platform",
    "author_id",
    "author_handle",
    "created_at",
    "generation",
    "summary_depth",
    "cascade_id",
    "text",
];

/// The table function registered as `lineage`.
#[derive(Debug)]
pub struct LineageFunction;

impl TableFunctionImpl for LineageFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let post_id = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(id)) | ScalarValue::Utf8View(Some(id)), _)] => id.clone(),
            _ => return plan_err!("lineage takes one post id as a string literal, e.g. SELECT * FROM lineage('x:1')"),
        };
        Ok(Arc::new(Lineage { post_id }))
    }
}

/// One post's lineage, computed when the table is scanned.
#[derive(Debug)]
struct Lineage {
    post_id: String,
}

fn lineage_schema() -> SchemaRef {
    let posts = super::table_schema("posts");
    let mut fields = vec![Field::new("depth", DataType::UInt32, false)];
    for name in COLUMNS {
        let field = posts.field_with_name(name).expect("a posts column");
        fields.push(field.clone().with_nullable(true));
    }
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl TableProvider for Lineage {
    fn schema(&self) -> SchemaRef {
        lineage_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| internal_datafusion_err!("lineage needs a DataFusion session state"))?;
        let context = SessionContext::new_with_state(state.clone());
        let chain = walk(&context, &self.post_id).await?;
        let batch = rows_of(&context, &chain).await?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())?)
    }
}

/// A post's place in the walk: its parent and its cascade.
struct Link {
    parent_id: Option<String>,
    cascade_id: String,
}

/// The ids from `post_id` up to its root, each with the cascade it is stored under (`None` for a
/// parent that is referenced but not stored).
async fn walk(context: &SessionContext, post_id: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut links: HashMap<String, Link> = HashMap::new();
    let mut cascades_read: HashSet<String> = HashSet::new();
    let mut chain: Vec<(String, Option<String>)> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    let mut next = Some(post_id.to_owned());
    while let Some(id) = next.take() {
        if !visited.insert(id.clone()) {
            break; // A cycle can only come from corrupt data; the chain so far is still the answer.
        }
        if !links.contains_key(&id) {
            let found = read_links(context, col("post_id").eq(lit(id.as_str()))).await?;
            let Some(cascade_id) = found.get(&id).map(|link| link.cascade_id.clone()) else {
                if !chain.is_empty() {
                    chain.push((id, None)); // A parent referenced but never stored.
                }
                break;
            };
            links.extend(found);
            if cascades_read.insert(cascade_id.clone()) {
                links.extend(read_links(context, col("cascade_id").eq(lit(cascade_id))).await?);
            }
        }
        let link = &links[&id];
        next = link.parent_id.clone();
        chain.push((id, Some(link.cascade_id.clone())));
    }
    Ok(chain)
}

/// `post_id → (parent_id, cascade_id)` of the posts matching `filter` (the first row of a post
/// stored twice by an at-least-once redelivery).
async fn read_links(context: &SessionContext, filter: Expr) -> Result<HashMap<String, Link>> {
    let batches =
        context.table("posts").await?.filter(filter)?.select_columns(&["post_id", "parent_id", "cascade_id"])?;
    let mut links = HashMap::new();
    for batch in batches.collect().await? {
        let (ids, parents, cascades) = (
            as_string_view_array(batch.column(0))?,
            as_string_view_array(batch.column(1))?,
            as_string_view_array(batch.column(2))?,
        );
        for row in 0..batch.num_rows() {
            links.entry(ids.value(row).to_owned()).or_insert_with(|| Link {
                parent_id: parents.is_valid(row).then(|| parents.value(row).to_owned()),
                cascade_id: cascades.value(row).to_owned(),
            });
        }
    }
    Ok(links)
}

/// The lineage table's rows for `chain`, read from `posts` by id within the chain's cascades.
async fn rows_of(context: &SessionContext, chain: &[(String, Option<String>)]) -> Result<RecordBatch> {
    let ids: Vec<Expr> = chain.iter().filter(|(_, c)| c.is_some()).map(|(id, _)| lit(id.as_str())).collect();
    let cascades: HashSet<&str> = chain.iter().filter_map(|(_, c)| c.as_deref()).collect();
    let schema = lineage_schema();
    let mut batches = Vec::new();
    if !ids.is_empty() {
        let cascades: Vec<Expr> = cascades.into_iter().map(lit).collect();
        let filter = col("cascade_id").in_list(cascades, false).and(col("post_id").in_list(ids, false));
        batches = context.table("posts").await?.filter(filter)?.select_columns(&COLUMNS)?.collect().await?;
    }
    // Where each chain id's first row is: (batch, row); a `None` row is a parent not stored.
    let mut first_row: HashMap<&str, (usize, usize)> = HashMap::new();
    for (b, batch) in batches.iter().enumerate() {
        let ids = as_string_view_array(batch.column(0))?;
        for row in 0..batch.num_rows() {
            first_row.entry(ids.value(row)).or_insert((b, row));
        }
    }
    let unseen = unseen_row(&schema)?;
    let sources: Vec<&RecordBatch> = batches.iter().chain([&unseen]).collect();
    let indices: Vec<(usize, usize)> =
        chain.iter().map(|(id, _)| first_row.get(id.as_str()).copied().unwrap_or((batches.len(), 0))).collect();
    let depth: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..chain.len() as u32));
    let mut columns = vec![depth];
    for (c, name) in COLUMNS.iter().enumerate() {
        if *name == "post_id" {
            // From the chain: a parent that is not stored is known by its id alone.
            columns.push(Arc::new(StringViewArray::from_iter_values(chain.iter().map(|(id, _)| id.as_str()))));
            continue;
        }
        let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
        columns.push(interleave(&arrays, &indices)?);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A one-row batch of nulls in the lineage columns (without `depth`): the row of a parent that is
/// referenced but not stored.
fn unseen_row(schema: &Schema) -> Result<RecordBatch> {
    let fields: Vec<Field> = schema.fields().iter().skip(1).map(|f| f.as_ref().clone()).collect();
    let columns = fields.iter().map(|f| new_null_array(f.data_type(), 1)).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}
