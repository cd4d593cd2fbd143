//! `max_by(value, ordering)`: the value of the row with the greatest ordering in each group, as
//! Spark SQL and DuckDB spell it (DataFusion 55 does not have it). The silver steps keep each
//! key's latest change with it: one hash aggregation by the key, where a `ROW_NUMBER()` window
//! sorted every landed event by its key (a third of a full run's time went to those sorts,
//! BENCHMARKS.md).
//!
//! Rows whose ordering is null are skipped; a null value is a value (the latest change may set a
//! column to null), as in Spark. Of rows with equal orderings the first seen wins: give each row
//! its own ordering (the silver SQL uses the event's position in its Kafka partition).
//!
//! The grouped accumulator keeps, per group, the greatest ordering and where its value is: the
//! winning rows of each input batch are copied into a chunk of their own, and the values come
//! out of the chunks by one `interleave` when the groups are emitted (or spilled).

use std::sync::Arc;

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array,
};
use deltalake::arrow::compute::{cast, interleave, take};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use deltalake::datafusion::common::{plan_err, Result, ScalarValue};
use deltalake::datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use deltalake::datafusion::logical_expr::utils::format_state_name;
use deltalake::datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The aggregate, to register in a session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(MaxBy {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MaxBy {
    signature: Signature,
}

impl AggregateUDFImpl for MaxBy {
    fn name(&self) -> &str {
        "max_by"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [value, ordering] if ordering.is_integer() => Ok(value.clone()),
            [_, ordering] => plan_err!(
                "max_by(value, ordering) orders by an integer; got {ordering}: cast it to BIGINT"
            ),
            _ => plan_err!("max_by takes two arguments: max_by(value, ordering)"),
        }
    }

    fn is_nullable(&self) -> bool {
        true
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "value"),
                args.return_type().clone(),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "ordering"),
                DataType::Int64,
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Latest {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            best: None,
        }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(LatestPerGroup::new(
            args.return_field.data_type().clone(),
        )))
    }
}

/// The orderings as 64-bit integers.
fn orderings(array: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// Without groups: one value and its ordering.
#[derive(Debug)]
struct Latest {
    value: ScalarValue,
    best: Option<i64>,
}

impl Latest {
    fn update(&mut self, values: &ArrayRef, ordering: &ArrayRef) -> Result<()> {
        let ordering = orderings(ordering)?;
        let mut winner = None;
        for (row, o) in ordering.iter().enumerate() {
            let Some(o) = o else { continue };
            if self.best.is_none_or(|b| o > b) {
                self.best = Some(o);
                winner = Some(row);
            }
        }
        if let Some(row) = winner {
            self.value = ScalarValue::try_from_array(values, row)?;
        }
        Ok(())
    }
}

impl Accumulator for Latest {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.update(&values[0], &values[1])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size() - size_of_val(&self.value)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::Int64(self.best)])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update(&states[0], &states[1])
    }
}

/// Where a group's value is: a chunk and a row in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    chunk: u32,
    row: u32,
}

impl At {
    /// A group with no value yet.
    const NONE: At = At {
        chunk: u32::MAX,
        row: u32::MAX,
    };
}

/// Per group: the greatest ordering and where its value is.
#[derive(Debug)]
struct LatestPerGroup {
    data_type: DataType,
    best: Vec<i64>,
    at: Vec<At>,
    /// The winning values of earlier batches (a superseded one stays until the next emit).
    chunks: Vec<ArrayRef>,
    chunk_bytes: usize,
    /// Per group, the row winning in the batch being read (`u32::MAX`: none).
    winning: Vec<u32>,
    touched: Vec<usize>,
}

impl LatestPerGroup {
    fn new(data_type: DataType) -> LatestPerGroup {
        LatestPerGroup {
            data_type,
            best: Vec::new(),
            at: Vec::new(),
            chunks: Vec::new(),
            chunk_bytes: 0,
            winning: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// Reads `[values, orderings]` of rows of `groups`: an input batch or another's state.
    fn update(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total: usize,
    ) -> Result<()> {
        let (values, ordering) = (&columns[0], &columns[1]);
        self.best.resize(total, i64::MIN);
        self.at.resize(total, At::NONE);
        self.winning.resize(total, u32::MAX);
        let ordering = orderings(ordering)?;
        for (row, &g) in groups.iter().enumerate() {
            if !passes(filter, row) || ordering.is_null(row) {
                continue;
            }
            let o = ordering.value(row);
            let first = self.at[g] == At::NONE && self.winning[g] == u32::MAX;
            if first || o > self.best[g] {
                if self.winning[g] == u32::MAX {
                    self.touched.push(g);
                }
                self.best[g] = o;
                self.winning[g] = row as u32;
            }
        }
        if self.touched.is_empty() {
            return Ok(());
        }
        let rows = UInt32Array::from_iter_values(self.touched.iter().map(|&g| self.winning[g]));
        let chunk = compact(take(values.as_ref(), &rows, None)?);
        let id = self.chunks.len() as u32;
        for (i, &g) in self.touched.iter().enumerate() {
            self.at[g] = At {
                chunk: id,
                row: i as u32,
            };
            self.winning[g] = u32::MAX;
        }
        self.touched.clear();
        self.chunk_bytes += chunk.get_array_memory_size();
        self.chunks.push(chunk);
        Ok(())
    }

    /// The values of the groups at `at`, nulls where a group has none.
    fn gather(&self, at: &[At]) -> Result<ArrayRef> {
        let null = new_null_array(&self.data_type, 1);
        let mut arrays: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        let nulls = arrays.len();
        arrays.push(null.as_ref());
        let indices: Vec<(usize, usize)> = at
            .iter()
            .map(|a| match *a {
                At::NONE => (nulls, 0),
                At { chunk, row } => (chunk as usize, row as usize),
            })
            .collect();
        Ok(interleave(&arrays, &indices)?)
    }

    /// The values and orderings of the groups emitted, which are forgotten; the values of the
    /// groups kept move into one chunk (superseded values are dropped there).
    fn emit(&mut self, emit_to: EmitTo) -> Result<(ArrayRef, ArrayRef)> {
        let at = emit_to.take_needed(&mut self.at);
        let best = emit_to.take_needed(&mut self.best);
        emit_to.take_needed(&mut self.winning);
        let values = self.gather(&at)?;
        let ordering: Int64Array = best
            .iter()
            .zip(&at)
            .map(|(&o, &a)| (a != At::NONE).then_some(o))
            .collect();
        let kept = match emit_to {
            EmitTo::All => Vec::new(),
            EmitTo::First(_) => vec![self.gather(&self.at)?],
        };
        for (i, a) in self.at.iter_mut().enumerate() {
            if *a != At::NONE {
                *a = At {
                    chunk: 0,
                    row: i as u32,
                };
            }
        }
        self.chunk_bytes = kept.iter().map(|c| c.get_array_memory_size()).sum();
        self.chunks = kept;
        Ok((values, Arc::new(ordering)))
    }
}

/// A copy that holds only its own rows: `take` on a view array keeps the input's whole buffers.
fn compact(array: ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Utf8View => Arc::new(array.as_string_view().gc()),
        DataType::BinaryView => Arc::new(array.as_binary_view().gc()),
        _ => array,
    }
}

impl GroupsAccumulator for LatestPerGroup {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.update(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to)?.0)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (values, ordering) = self.emit(emit_to)?;
        Ok(vec![values, ordering])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.update(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ordering = orderings(&values[1])?;
        let ordering: Int64Array = (0..ordering.len())
            .map(|row| {
                (passes(opt_filter, row) && ordering.is_valid(row)).then(|| ordering.value(row))
            })
            .collect();
        Ok(vec![Arc::clone(&values[0]), Arc::new(ordering)])
    }

    fn size(&self) -> usize {
        self.best.capacity() * size_of::<i64>()
            + self.at.capacity() * size_of::<At>()
            + self.winning.capacity() * size_of::<u32>()
            + self.touched.capacity() * size_of::<usize>()
            + self.chunk_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{RecordBatch, StringArray};
    use deltalake::arrow::datatypes::Schema;
    use deltalake::datafusion::prelude::SessionContext;

    fn strings(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }

    fn ints(a: &ArrayRef) -> Vec<Option<i64>> {
        a.as_primitive::<Int64Type>().iter().collect()
    }

    fn s(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn i(v: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(v.to_vec()))
    }

    #[test]
    fn each_group_keeps_the_value_of_its_greatest_ordering_across_batches() {
        let mut acc = LatestPerGroup::new(DataType::Utf8);
        let values = s(&[Some("a1"), Some("b1"), Some("a3"), Some("a2")]);
        let ordering = i(&[Some(1), Some(10), Some(3), Some(2)]);
        acc.update_batch(&[values, ordering], &[0, 1, 0, 0], None, 2)
            .unwrap();
        // A later batch: a lower ordering loses, a higher one wins, a null one is skipped, a
        // null value with the highest ordering is the value.
        let values = s(&[Some("b0"), None, Some("c9"), Some("a9")]);
        let ordering = i(&[Some(0), Some(11), Some(5), None]);
        acc.update_batch(&[values, ordering], &[1, 1, 2, 0], None, 4)
            .unwrap();
        let out = acc.evaluate(EmitTo::All).unwrap();
        assert_eq!(
            strings(&out),
            vec![Some("a3".into()), None, Some("c9".into()), None]
        );
    }

    #[test]
    fn filtered_rows_do_not_count_and_ties_keep_the_first() {
        let mut acc = LatestPerGroup::new(DataType::Int64);
        let values = i(&[Some(1), Some(2), Some(3)]);
        let ordering = i(&[Some(7), Some(9), Some(7)]);
        let filter = BooleanArray::from(vec![Some(true), Some(false), None]);
        acc.update_batch(&[values, ordering], &[0, 0, 0], Some(&filter), 1)
            .unwrap();
        assert_eq!(ints(&acc.evaluate(EmitTo::All).unwrap()), vec![Some(1)]);
    }

    #[test]
    fn emitting_the_first_groups_keeps_the_rest_and_their_orderings() {
        let mut acc = LatestPerGroup::new(DataType::Utf8);
        let values = s(&[Some("x"), Some("y"), Some("z")]);
        let ordering = i(&[Some(5), Some(6), Some(7)]);
        acc.update_batch(&[values, ordering], &[0, 1, 2], None, 4)
            .unwrap();
        let state = acc.state(EmitTo::First(2)).unwrap();
        assert_eq!(strings(&state[0]), vec![Some("x".into()), Some("y".into())]);
        assert_eq!(ints(&state[1]), vec![Some(5), Some(6)]);
        // What was group 2 is now group 0, and still loses to a higher ordering only.
        let values = s(&[Some("lower"), Some("w")]);
        let ordering = i(&[Some(6), Some(1)]);
        acc.merge_batch(&[values, ordering], &[0, 1], 2).unwrap();
        let state = acc.state(EmitTo::All).unwrap();
        assert_eq!(strings(&state[0]), vec![Some("z".into()), Some("w".into())]);
        assert_eq!(ints(&state[1]), vec![Some(7), Some(1)]);
        assert!(acc.chunks.is_empty());
    }

    #[test]
    fn state_of_unfiltered_rows_is_their_own_and_filtered_ones_lose_their_ordering() {
        let acc = LatestPerGroup::new(DataType::Utf8);
        let filter = BooleanArray::from(vec![true, false]);
        let state = acc
            .convert_to_state(
                &[s(&[Some("a"), Some("b")]), i(&[Some(1), Some(2)])],
                Some(&filter),
            )
            .unwrap();
        assert_eq!(ints(&state[1]), vec![Some(1), None]);
    }

    /// Many groups in a small memory pool: the aggregation spills its state (this
    /// accumulator's `state`) and merges it back (`merge_batch`).
    #[tokio::test]
    async fn spilled_and_merged_back_each_key_keeps_its_latest_value() {
        use deltalake::datafusion::execution::memory_pool::FairSpillPool;
        use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use deltalake::datafusion::prelude::SessionConfig;
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(4 << 20)))
            .build_arc()
            .unwrap();
        let config = SessionConfig::new()
            .with_batch_size(1024)
            .with_target_partitions(2);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udaf(udaf());
        let keys = 60_000i64;
        // Each key three times, its latest (position 3k+2) in the middle batch, its value
        // spelled from its key and position.
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Utf8, true),
            Field::new("pos", DataType::Int64, false),
        ]));
        let batches: Vec<RecordBatch> = [0i64, 2, 1]
            .iter()
            .map(|&step| {
                let k: Vec<String> = (0..keys).map(|k| format!("key-{k:08}-padded")).collect();
                let pos: Vec<i64> = (0..keys).map(|k| 3 * k + step).collect();
                let v: Vec<String> = (0..keys)
                    .map(|k| format!("value of {k} at {}", 3 * k + step))
                    .collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringArray::from(k)),
                        Arc::new(StringArray::from(v)),
                        Arc::new(Int64Array::from(pos)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let table =
            deltalake::datafusion::datasource::MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let df = ctx
            .sql(
                "SELECT COUNT(*) AS n, \
                 SUM(CASE WHEN v = concat('value of ', CAST(CAST(substr(k, 5, 8) AS BIGINT) AS VARCHAR), \
                 ' at ', CAST(CAST(substr(k, 5, 8) AS BIGINT) * 3 + 2 AS VARCHAR)) THEN 1 ELSE 0 END) AS right \
                 FROM (SELECT k, max_by(v, pos) AS v FROM t GROUP BY k) latest",
            )
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let rows = deltalake::datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        fn spills(plan: &dyn deltalake::datafusion::physical_plan::ExecutionPlan) -> usize {
            let own = plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
            own + plan
                .children()
                .iter()
                .map(|c| spills(c.as_ref()))
                .sum::<usize>()
        }
        assert!(spills(plan.as_ref()) > 0, "the aggregation did not spill");
        let n = ints(&cast(rows[0].column(0), &DataType::Int64).unwrap());
        let right = ints(&cast(rows[0].column(1), &DataType::Int64).unwrap());
        assert_eq!((n, right), (vec![Some(keys)], vec![Some(keys)]));
    }

    #[tokio::test]
    async fn in_sql_it_keeps_each_keys_latest_row_grouped_or_not() {
        let ctx = SessionContext::new();
        ctx.register_udaf(udaf());
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Utf8, true),
            Field::new("pos", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                s(&[Some("a"), Some("b"), Some("a"), Some("b")]),
                s(&[Some("old"), Some("only"), Some("new"), None]),
                Arc::new(deltalake::arrow::array::Int32Array::from(vec![1, 2, 3, 0])),
            ],
        )
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        let first_column = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let rows = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                strings(&cast(rows[0].column(0), &DataType::Utf8).unwrap())
            }
        };
        assert_eq!(
            first_column("SELECT max_by(v, pos) AS v FROM t GROUP BY k ORDER BY k").await,
            vec![Some("new".into()), Some("only".into())]
        );
        assert_eq!(
            first_column("SELECT max_by(v, pos) AS v FROM t").await,
            vec![Some("new".into())]
        );
        let wrong = ctx.sql("SELECT max_by(v, k) FROM t").await.unwrap_err();
        assert!(wrong.to_string().contains("cast it to BIGINT"), "{wrong}");
    }
}
