//! The JSON API and the dashboard's routes.
//!
//! Every figure is the Lambda merge: the batch view's marts plus the speed layer's increments
//! since the batch run's watermark; every answer says up to where each part reaches
//! (`watermark`). Bad parameters get 400 with a message, unknown ids 404, and all of them
//! before the first view is caught up get 503.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::Uri;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use brewline_core::sales::{Day, Sales};
use brewline_core::{calendar, query};
use futures_util::stream::Stream;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::live::{Figures, Live};

/// The dashboard page: plain HTML and JavaScript, no build step.
const DASHBOARD: &str = include_str!("dashboard.html");

/// The longest range a daily query may span.
const MAX_DAYS: i64 = 366;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<Live>,
    /// How often the dashboard's stream sends the figures.
    pub refresh: Duration,
    /// The process's metrics: the speed layer's, when it runs in this process, and the
    /// serving layer's ([`crate::ServingCollector`]).
    pub metrics: Arc<brewline_metrics::Registry>,
    /// Who may read, and how long a request may take ([`crate::access`]).
    pub access: crate::access::Access,
}

/// The largest request body taken (the login form is the only one read).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The routes of the serving layer, each with its handler.
fn routes() -> [(&'static str, MethodRouter<AppState>); 14] {
    [
        ("/", get(dashboard)),
        (
            crate::access::LOGIN,
            get(crate::access::login_page).post(crate::access::log_in),
        ),
        ("/api/sales/today", get(sales_today)),
        ("/api/sales/daily", get(sales_daily)),
        ("/api/sales/hourly", get(sales_hourly)),
        ("/api/products/top", get(products_top)),
        ("/api/stores/top", get(stores_top)),
        ("/api/stores/{id}/sales", get(store_sales)),
        ("/api/cities", get(cities)),
        ("/api/suggestions/stats", get(suggestion_stats)),
        ("/api/dashboard", get(dashboard_figures)),
        ("/api/live", get(live_stream)),
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics)),
    ]
}

/// `/metrics` and `/healthz` alone, open: for a listener of its own that only Prometheus
/// reaches (`serve.metrics_addr`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// The serving layer: its routes, and a 404 that lists them for any other path.
pub fn router(state: AppState) -> Router {
    let mut listed = Vec::new();
    let mut router = Router::new();
    for (path, handler) in routes() {
        if path != "/" {
            listed.push(path);
        }
        router = router.route(path, handler);
    }
    let message: Arc<str> = format!("no such route: see {}", listed.join(", ")).into();
    router
        .fallback(move || not_found(message.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let response = next.run(request).await;
    state.live.count_request(&route, response.status().as_u16());
    response
}

/// An error answer: its status and what to fix.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type Answer<T> = Result<Json<T>, ApiError>;

async fn not_found(message: Arc<str>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, message.to_string())
}

/// Runs `f` on the figures, or answers 503 while the first view is being built.
fn with_figures<T>(state: &AppState, f: impl FnOnce(&Figures) -> Result<T, ApiError>) -> Answer<T> {
    state
        .live
        .read(f)
        .unwrap_or_else(|| {
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the serving layer is still reading the batch view and the topics; try again in a moment".into(),
            ))
        })
        .map(Json)
}

// ---- Parameters -------------------------------------------------------------------------

/// A route's query parameters, read by serde from the percent-decoded query string: a
/// parameter the route does not take, or one that does not read, is a 400 that says so.
struct Params<T>(T);

impl<T: DeserializeOwned> Params<T> {
    fn of(uri: &Uri) -> Result<Params<T>, ApiError> {
        match Query::<T>::try_from_uri(uri) {
            Ok(Query(t)) => Ok(Params(t)),
            Err(e) => {
                let detail = e.body_text();
                let detail = detail
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&detail);
                let what = if detail.contains("unknown field") {
                    "unknown parameter"
                } else {
                    "the query string does not read"
                };
                Err(ApiError::bad(format!("{what}: {detail}")))
            }
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Params::of(&parts.uri)
    }
}

/// No parameter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

/// `date=YYYY-MM-DD` (default today).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDate {
    date: Option<String>,
}

/// `date=` and `limit=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopOnDate {
    date: Option<String>,
    limit: Option<String>,
}

/// `from=` and `to=` (inclusive; by default the last 7 days).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DayRange {
    from: Option<String>,
    to: Option<String>,
}

/// Days since the epoch of the date parameter `name` (`default` when there is none).
fn date(name: &str, value: Option<&str>, default: i64) -> Result<i64, ApiError> {
    query::date(name, value, default).map_err(ApiError::bad)
}

impl DayRange {
    /// `from` and `to` (days since the epoch, inclusive), by default the last 7 days.
    fn days(&self, today: i64) -> Result<(i64, i64), ApiError> {
        query::day_range(self.from.as_deref(), self.to.as_deref(), today, MAX_DAYS)
            .map_err(ApiError::bad)
    }
}

impl TopOnDate {
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        query::limit(self.limit.as_deref(), default, max).map_err(ApiError::bad)
    }
}

fn day_name(days: i64) -> Day {
    query::day_name(days)
}

fn today() -> i64 {
    brewline_ports::now_ms().div_euclid(86_400_000)
}

// ---- The merge ----------------------------------------------------------------------------

/// A figure of the batch view plus the speed layer's increment.
fn merged<K: Ord>(batch: &BTreeMap<K, Sales>, speed: &BTreeMap<K, Sales>, key: &K) -> Sales {
    let s = batch.get(key).copied().unwrap_or_default();
    match speed.get(key) {
        Some(increment) => s.plus(increment),
        None => s,
    }
}

/// The lowest value of a key's second part (where a day's keys start).
trait Lowest {
    fn lowest() -> Self;
}

impl Lowest for String {
    fn lowest() -> Self {
        String::new()
    }
}

impl Lowest for i64 {
    fn lowest() -> Self {
        i64::MIN
    }
}

/// Every key of `day` in either map (their second part), merged.
fn merged_of_day<T: Ord + Clone + Lowest>(
    batch: &BTreeMap<(Day, T), Sales>,
    speed: &BTreeMap<(Day, T), Sales>,
    day: &Day,
) -> Vec<(T, Sales)> {
    let of_day = |map: &BTreeMap<(Day, T), Sales>| -> Vec<T> {
        map.range((day.clone(), T::lowest())..)
            .take_while(|((d, _), _)| d == day)
            .map(|((_, k), _)| k.clone())
            .collect()
    };
    let keys: std::collections::BTreeSet<T> =
        of_day(batch).into_iter().chain(of_day(speed)).collect();
    keys.into_iter()
        .map(|k| {
            let s = merged(batch, speed, &(day.clone(), k.clone()));
            (k, s)
        })
        .filter(|(_, s)| !s.is_zero())
        .collect()
}

/// Up to where each part of a figure reaches.
#[derive(Debug, Serialize)]
pub struct Watermarks {
    pub batch: Option<BatchPart>,
    pub speed: SpeedPart,
}

#[derive(Debug, Serialize)]
pub struct BatchPart {
    pub run_id: String,
    pub published_at: String,
    /// The latest order time in the batch view.
    pub through: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SpeedPart {
    /// Events read since the serving layer started.
    pub events: u64,
    /// Orders changed since the batch watermark.
    pub orders: usize,
    /// Of them, orders whose state at the watermark is still being looked up.
    pub unresolved: usize,
    /// Records not read yet.
    pub lag: u64,
    pub updated_at: String,
}

fn watermarks(live: &Live, f: &Figures) -> Watermarks {
    Watermarks {
        batch: f.watermark().map(|w| BatchPart {
            run_id: w.run_id.clone(),
            published_at: calendar::datetime_of_millis(w.published_ms),
            through: w.through_ms.map(calendar::datetime_of_millis),
        }),
        speed: SpeedPart {
            events: live.events.load(Ordering::Relaxed),
            orders: f.speed.orders_read(),
            unresolved: f.speed.unresolved_count(),
            lag: f.lag,
            updated_at: calendar::datetime_of_millis(f.updated_ms),
        },
    }
}

fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

// ---- Routes ---------------------------------------------------------------------------------

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

/// `/healthz`: `ok`, or `degraded` with the reason (the figures are served, but partial): a
/// status to alert on, not one to restart for (both answer 200); 503 only while starting.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    watermark: Watermarks,
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.live.read(|f| watermarks(&state.live, f)) {
        Some(watermark) => {
            let reason = state.live.degraded();
            Json(Health {
                status: if reason.is_some() { "degraded" } else { "ok" },
                reason,
                watermark,
            })
            .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "starting" })),
        )
            .into_response(),
    }
}

#[derive(Debug, Serialize)]
pub struct DaySales {
    pub date: Day,
    /// Orders with at least one line.
    pub orders: i64,
    pub lines: i64,
    /// VND.
    pub revenue: i64,
    pub accepted_suggestions: i64,
    pub accepted_revenue: i64,
}

fn day_sales(date: Day, s: &Sales) -> DaySales {
    DaySales {
        date,
        orders: s.orders,
        lines: s.lines,
        revenue: s.revenue,
        accepted_suggestions: s.accepted,
        accepted_revenue: s.accepted_revenue,
    }
}

#[derive(Debug, Serialize)]
pub struct Today {
    #[serde(flatten)]
    pub sales: DaySales,
    pub suggestions: i64,
    /// Suggestions made per order.
    pub suggestion_rate: Option<f64>,
    /// Suggestions taken per suggestion made.
    pub acceptance_rate: Option<f64>,
    /// Orders placed in the last 60 seconds.
    pub orders_last_minute: usize,
    pub watermark: Watermarks,
}

fn today_of(live: &Live, f: &Figures) -> Today {
    let date = day_name(today());
    let s = merged(&f.batch.book.daily, &f.speed.book().daily, &date);
    let now = brewline_ports::now_ms();
    let last_minute = live
        .recent
        .lock()
        .map(|r| r.last_minute(now))
        .unwrap_or_default();
    Today {
        sales: day_sales(date, &s),
        suggestions: s.suggestions,
        suggestion_rate: rate(s.suggestions, s.orders),
        acceptance_rate: rate(s.accepted, s.suggestions),
        orders_last_minute: last_minute,
        watermark: watermarks(live, f),
    }
}

async fn sales_today(State(state): State<AppState>, _: Params<NoParams>) -> Answer<Today> {
    with_figures(&state, |f| Ok(today_of(&state.live, f)))
}

#[derive(Debug, Serialize)]
pub struct Daily {
    pub from: Day,
    pub to: Day,
    pub days: Vec<DaySales>,
    pub watermark: Watermarks,
}

async fn sales_daily(State(state): State<AppState>, Params(r): Params<DayRange>) -> Answer<Daily> {
    let (from, to) = r.days(today())?;
    with_figures(&state, |f| {
        let days = (from..=to)
            .map(|d| {
                let date = day_name(d);
                let s = merged(&f.batch.book.daily, &f.speed.book().daily, &date);
                day_sales(date, &s)
            })
            .collect();
        Ok(Daily {
            from: day_name(from),
            to: day_name(to),
            days,
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Serialize)]
pub struct HourSales {
    pub hour: i32,
    pub orders: i64,
    pub lines: i64,
    pub revenue: i64,
}

#[derive(Debug, Serialize)]
pub struct Hourly {
    pub date: Day,
    pub hours: Vec<HourSales>,
    pub watermark: Watermarks,
}

async fn sales_hourly(State(state): State<AppState>, Params(p): Params<OnDate>) -> Answer<Hourly> {
    let date = day_name(date("date", p.date.as_deref(), today())?);
    with_figures(&state, |f| {
        let hours = (0..24)
            .map(|hour| {
                let s = merged(
                    &f.batch.book.hourly,
                    &f.speed.book().hourly,
                    &(date.clone(), hour),
                );
                HourSales {
                    hour,
                    orders: s.orders,
                    lines: s.lines,
                    revenue: s.revenue,
                }
            })
            .collect();
        Ok(Hourly {
            date: date.clone(),
            hours,
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Serialize)]
pub struct ProductSales {
    pub product_id: String,
    pub name: Option<String>,
    pub quantity: i64,
    pub revenue: i64,
}

#[derive(Debug, Serialize)]
pub struct TopProducts {
    pub date: Day,
    pub products: Vec<ProductSales>,
    pub watermark: Watermarks,
}

fn top_products(f: &Figures, date: &Day, limit: usize) -> Vec<ProductSales> {
    let mut products: Vec<ProductSales> =
        merged_of_day(&f.batch.book.products, &f.speed.book().products, date)
            .into_iter()
            .map(|(id, s)| ProductSales {
                name: f.names.products.get(&id).cloned(),
                product_id: id,
                quantity: s.quantity,
                revenue: s.revenue,
            })
            .collect();
    products.sort_by(|a, b| {
        b.revenue
            .cmp(&a.revenue)
            .then_with(|| a.product_id.cmp(&b.product_id))
    });
    products.truncate(limit);
    products
}

async fn products_top(
    State(state): State<AppState>,
    Params(params): Params<TopOnDate>,
) -> Answer<TopProducts> {
    let date = day_name(date("date", params.date.as_deref(), today())?);
    let limit = params.limit(5, 100)?;
    with_figures(&state, |f| {
        Ok(TopProducts {
            products: top_products(f, &date, limit),
            date: date.clone(),
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Serialize)]
pub struct StoreSales {
    pub store_id: i64,
    pub name: Option<String>,
    pub city: Option<String>,
    pub orders: i64,
    pub revenue: i64,
}

#[derive(Debug, Serialize)]
pub struct TopStores {
    pub date: Day,
    pub stores: Vec<StoreSales>,
    pub watermark: Watermarks,
}

fn top_stores(f: &Figures, date: &Day, limit: usize) -> Vec<StoreSales> {
    let mut stores: Vec<StoreSales> =
        merged_of_day(&f.batch.book.stores, &f.speed.book().stores, date)
            .into_iter()
            .map(|(id, s)| {
                let known = f.names.stores.get(&id);
                StoreSales {
                    store_id: id,
                    name: known.map(|k| k.name.clone()),
                    city: known.map(|k| k.city.clone()),
                    orders: s.orders,
                    revenue: s.revenue,
                }
            })
            .collect();
    stores.sort_by(|a, b| {
        b.revenue
            .cmp(&a.revenue)
            .then_with(|| a.store_id.cmp(&b.store_id))
    });
    stores.truncate(limit);
    stores
}

async fn stores_top(
    State(state): State<AppState>,
    Params(params): Params<TopOnDate>,
) -> Answer<TopStores> {
    let date = day_name(date("date", params.date.as_deref(), today())?);
    let limit = params.limit(10, 1000)?;
    with_figures(&state, |f| {
        Ok(TopStores {
            stores: top_stores(f, &date, limit),
            date: date.clone(),
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Serialize)]
pub struct StoreDay {
    pub date: Day,
    pub orders: i64,
    pub revenue: i64,
}

#[derive(Debug, Serialize)]
pub struct StoreHistory {
    pub store_id: i64,
    pub name: String,
    pub city: String,
    pub from: Day,
    pub to: Day,
    pub days: Vec<StoreDay>,
    pub watermark: Watermarks,
}

async fn store_sales(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Params(r): Params<DayRange>,
) -> Answer<StoreHistory> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("store id {id:?} is not a number")))?;
    let (from, to) = r.days(today())?;
    with_figures(&state, |f| {
        let store = f.names.stores.get(&id).ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "no store {id} among the shop's {} stores",
                    f.names.stores.len()
                ),
            )
        })?;
        let days = (from..=to)
            .map(|d| {
                let date = day_name(d);
                let s = merged(
                    &f.batch.book.stores,
                    &f.speed.book().stores,
                    &(date.clone(), id),
                );
                StoreDay {
                    date,
                    orders: s.orders,
                    revenue: s.revenue,
                }
            })
            .collect();
        Ok(StoreHistory {
            store_id: id,
            name: store.name.clone(),
            city: store.city.clone(),
            from: day_name(from),
            to: day_name(to),
            days,
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Serialize)]
pub struct CitySales {
    pub city: String,
    /// Every order of the city's stores (with or without lines yet).
    pub orders: i64,
    pub revenue: i64,
}

#[derive(Debug, Serialize)]
pub struct Cities {
    pub date: Day,
    pub cities: Vec<CitySales>,
    pub watermark: Watermarks,
}

fn cities_of(f: &Figures, date: &Day) -> Vec<CitySales> {
    let mut cities: Vec<CitySales> =
        merged_of_day(&f.batch.book.cities, &f.speed.book().cities, date)
            .into_iter()
            .map(|(city, s)| CitySales {
                city,
                orders: s.orders,
                revenue: s.revenue,
            })
            .collect();
    cities.sort_by(|a, b| b.revenue.cmp(&a.revenue).then_with(|| a.city.cmp(&b.city)));
    cities
}

async fn cities(State(state): State<AppState>, Params(p): Params<OnDate>) -> Answer<Cities> {
    let date = day_name(date("date", p.date.as_deref(), today())?);
    with_figures(&state, |f| {
        Ok(Cities {
            cities: cities_of(f, &date),
            date: date.clone(),
            watermark: watermarks(&state.live, f),
        })
    })
}

#[derive(Debug, Default, Serialize)]
pub struct SuggestionDay {
    pub date: Day,
    pub orders: i64,
    pub suggestions: i64,
    pub accepted: i64,
    pub suggestion_rate: Option<f64>,
    pub acceptance_rate: Option<f64>,
    pub offered_revenue: i64,
    pub accepted_revenue: i64,
}

fn suggestion_day(date: Day, s: &Sales) -> SuggestionDay {
    SuggestionDay {
        date,
        orders: s.orders,
        suggestions: s.suggestions,
        accepted: s.accepted,
        suggestion_rate: rate(s.suggestions, s.orders),
        acceptance_rate: rate(s.accepted, s.suggestions),
        offered_revenue: s.offered_revenue,
        accepted_revenue: s.accepted_revenue,
    }
}

#[derive(Debug, Serialize)]
pub struct SuggestionStats {
    pub from: Day,
    pub to: Day,
    /// The whole range.
    pub total: SuggestionDay,
    pub days: Vec<SuggestionDay>,
    pub watermark: Watermarks,
}

async fn suggestion_stats(
    State(state): State<AppState>,
    Params(r): Params<DayRange>,
) -> Answer<SuggestionStats> {
    let (from, to) = r.days(today())?;
    with_figures(&state, |f| {
        let mut total = Sales::default();
        let days = (from..=to)
            .map(|d| {
                let date = day_name(d);
                let s = merged(&f.batch.book.daily, &f.speed.book().daily, &date);
                total = total.plus(&s);
                suggestion_day(date, &s)
            })
            .collect();
        Ok(SuggestionStats {
            from: day_name(from),
            to: day_name(to),
            total: suggestion_day(format!("{}..{}", day_name(from), day_name(to)), &total),
            days,
            watermark: watermarks(&state.live, f),
        })
    })
}

/// Everything the dashboard shows, in one answer.
#[derive(Debug, Serialize)]
pub struct Dashboard {
    pub today: Today,
    /// Orders placed in each of the last 30 minutes and in the current one (`HH:MM` UTC).
    pub per_minute: Vec<(String, usize)>,
    pub top_products: Vec<ProductSales>,
    pub cities: Vec<CitySales>,
    pub top_stores: Vec<StoreSales>,
}

fn dashboard_of(live: &Live, f: &Figures) -> Dashboard {
    let date = day_name(today());
    let now = brewline_ports::now_ms();
    let per_minute = live
        .recent
        .lock()
        .map(|r| r.per_minute(now, 30))
        .unwrap_or_default()
        .into_iter()
        .map(|(m, n)| {
            let at = calendar::datetime_of_millis(m * 60_000);
            (at.get(11..16).unwrap_or_default().to_string(), n)
        })
        .collect();
    Dashboard {
        today: today_of(live, f),
        per_minute,
        top_products: top_products(f, &date, 5),
        cities: cities_of(f, &date),
        top_stores: top_stores(f, &date, 10),
    }
}

async fn dashboard_figures(
    State(state): State<AppState>,
    _: Params<NoParams>,
) -> Answer<Dashboard> {
    with_figures(&state, |f| Ok(dashboard_of(&state.live, f)))
}

/// The dashboard's figures as server-sent events, every `refresh`, to at most
/// `serve.max_live_clients` dashboards at once (503 for more). An event is made only once the
/// last one was taken, so a slow client holds one event's worth of memory.
async fn live_stream(State(state): State<AppState>) -> Response {
    let Some(place) = state.live.join_live() else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} dashboards are on the live stream already (serve.max_live_clients): try again later",
                state.live.max_live_clients()
            ),
        )
        .into_response();
    };
    live_events(state, place).into_response()
}

fn live_events(
    state: AppState,
    place: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // The place is given back when the stream is dropped: the dashboard went away.
    let stream = futures_util::stream::unfold((state, place), |(state, place)| async move {
        let figures = state.live.read(|f| dashboard_of(&state.live, f));
        let event = match figures.map(|d| serde_json::to_string(&d)) {
            Some(Ok(json)) => Event::default().event("figures").data(json),
            Some(Err(e)) => Event::default().event("error").data(e.to_string()),
            None => Event::default().event("starting").data("{}"),
        };
        tokio::time::sleep(state.refresh).await;
        Some((Ok(event), (state, place)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, brewline_metrics::CONTENT_TYPE)],
        brewline_metrics::render(&state.metrics),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
        let uri: Uri = format!("/r?{q}").parse().unwrap();
        Params::of(&uri).map(|Params(t)| t)
    }

    #[test]
    fn ranges_default_to_the_last_week_and_are_bounded() {
        let r = |q: &str| query::<DayRange>(q).unwrap();
        assert_eq!(r("").days(100).unwrap(), (94, 100));
        assert_eq!(r("to=1970-01-11").days(100).unwrap(), (4, 10));
        assert_eq!(
            r("from=1970-01-01&to=1970-01-01").days(100).unwrap(),
            (0, 0)
        );
        // Percent-encoded values are decoded.
        assert_eq!(r("to=1970%2D01%2D11").days(100).unwrap(), (4, 10));
        assert!(r("from=1970-01-03&to=1970-01-02").days(100).is_err());
        assert!(r("from=1970-01-01&to=1971-01-02").days(1000).is_err());
        let t = |q: &str| query::<TopOnDate>(q).unwrap();
        assert_eq!(t("").limit(5, 100).unwrap(), 5);
        assert_eq!(t("limit=100").limit(5, 100).unwrap(), 100);
        for bad in ["limit=0", "limit=101", "limit=-1", "limit=ten"] {
            assert!(t(bad).limit(5, 100).is_err(), "{bad}");
        }
        let e = query::<OnDate>("date=x&colour=red").err().map(|e| e.1);
        assert!(e.is_some_and(|m| m.contains("unknown parameter")
            && m.contains("colour")
            && m.contains("date")));
        let e = query::<NoParams>("colour=red").err().map(|e| e.1);
        assert!(e.is_some_and(|m| m.contains("unknown parameter")));
    }
}
