//! The dashboard: server-rendered HTML with a little inline JavaScript (no external resources).
//! Live updates: an `EventSource` on `/v1/events/stream` triggers a re-render of the sections
//! (`/ui/sections`). The page authenticates with the `lk_token` cookie, set from the login form
//! or from a `#token=...` URL fragment (never sent to the server in a URL).

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Response};

use super::invoices::InvoiceFilter;
use super::routes::{Auth, READ};
use super::ApiContext;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn sat(msat: u64) -> String {
    let s = (msat / 1000).to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

fn short(s: &str) -> String {
    if s.len() > 16 {
        format!("{}…{}", &s[..8], &s[s.len() - 6..])
    } else {
        s.to_string()
    }
}

fn ms_time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Renders the live sections (status, balances, channels, invoices, payments, deliveries).
async fn render_sections(ctx: &Arc<ApiContext>) -> String {
    let c = ctx.clone();
    let Ok((status, payments)) = tokio::task::spawn_blocking(move || {
        let mut p = c.node.list_payments().unwrap_or_default();
        p.truncate(10);
        (c.status(), p)
    })
    .await
    else {
        return "<section><p class=bad>The node could not be read.</p></section>".into();
    };
    let invoices = ctx
        .invoices
        .list(InvoiceFilter {
            status: None,
            limit: Some(10),
        })
        .await
        .unwrap_or_default();
    let deliveries = match &ctx.webhooks {
        Some(w) => {
            let w = w.clone();
            tokio::task::spawn_blocking(move || super::recent_deliveries(&w, None, None, 10))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default()
        }
        None => vec![],
    };
    let c = ctx.clone();
    let channels = tokio::task::spawn_blocking(move || c.channels())
        .await
        .unwrap_or_default();

    let mut h = String::new();
    let b = &status.balances;
    h += &format!(
        r#"<section id="status"><h2>Node</h2><table>
<tr><th>Connection</th><td id="conn-state" class="{cls}">{state}</td></tr>
<tr><th>Node id</th><td class="mono">{id}</td></tr>
<tr><th>Network</th><td>{net}</td></tr>
<tr><th>Channels</th><td>{act} active / {tot} total, {cap} sat capacity</td></tr>
<tr><th>Peers connected</th><td>{peers}</td></tr>
<tr><th>Last chain sync</th><td>{sync}</td></tr></table></section>
<section id="balances"><h2>Balances</h2><table>
<tr><th>On-chain</th><td>{oc} sat confirmed, {ou} sat unconfirmed</td></tr>
<tr><th>Lightning local</th><td>{ll} sat (can send {lo} sat)</td></tr>
<tr><th>Lightning remote</th><td>{lr} sat (can receive {li} sat)</td></tr></table></section>"#,
        cls = if status.running { "ok" } else { "bad" },
        state = if status.running { "running" } else { "stopped" },
        id = esc(&status.node_id),
        net = esc(&status.network),
        act = status.channels.active,
        tot = status.channels.total,
        cap = sat(status.channels.capacity_sat * 1000),
        peers = status.peers_connected,
        sync = status
            .last_chain_sync_unix
            .map(|s| ms_time(s * 1000))
            .unwrap_or_else(|| "never".into()),
        oc = sat(b.onchain_confirmed_sat * 1000),
        ou = sat(b.onchain_unconfirmed_sat * 1000),
        ll = sat(b.lightning_local_msat),
        lo = sat(b.lightning_outbound_msat),
        lr = sat(b.lightning_remote_msat),
        li = sat(b.lightning_inbound_msat),
    );
    h += r#"<section id="channels"><h2>Channels</h2>"#;
    if channels.is_empty() {
        h += "<p class=muted>No channels.</p>";
    } else {
        h += "<table><tr><th>Peer</th><th>Capacity</th><th>Liquidity (local | remote)</th><th>State</th></tr>";
        for c in &channels {
            let total = (c.local_balance_msat + c.remote_balance_msat).max(1);
            let pct = c.local_balance_msat as f64 * 100.0 / total as f64;
            h += &format!(
                r#"<tr><td class="mono">{peer}</td><td>{cap} sat</td><td><div class="bar" title="local {l} sat / remote {r} sat"><div class="local" style="width:{pct:.1}%"></div></div><small>{l} | {r} sat</small></td><td>{st}</td></tr>"#,
                peer = esc(&short(&c.counterparty)),
                cap = sat(c.capacity_sat * 1000),
                l = sat(c.local_balance_msat),
                r = sat(c.remote_balance_msat),
                st = if c.usable {
                    "usable"
                } else if c.ready {
                    "ready, peer offline"
                } else {
                    "pending"
                },
            );
        }
        h += "</table>";
    }
    h += "</section>";
    h += r#"<section id="invoices"><h2>Recent invoices</h2>"#;
    if invoices.is_empty() {
        h += "<p class=muted>No invoices yet.</p>";
    } else {
        h += "<table><tr><th>Id</th><th>Amount</th><th>Fiat</th><th>Status</th><th>Created</th></tr>";
        for i in &invoices {
            h += &format!(
                r#"<tr data-invoice="{id}"><td>{id}</td><td>{amt}</td><td>{fiat}</td><td class="st-{st}">{st}</td><td>{cr}</td></tr>"#,
                id = esc(&i.id),
                amt = i
                    .amount_msat
                    .map(|m| format!("{} sat", sat(m)))
                    .unwrap_or_else(|| "open".into()),
                fiat = match (&i.amount_fiat, &i.currency) {
                    (Some(a), Some(c)) => format!("{} {}", esc(a), esc(c)),
                    _ => String::new(),
                },
                st = esc(&i.status),
                cr = esc(&i.created_at),
            );
        }
        h += "</table>";
    }
    h += "</section>";
    h += r#"<section id="payments"><h2>Recent payments</h2>"#;
    if payments.is_empty() {
        h += "<p class=muted>No payments yet.</p>";
    } else {
        h += "<table><tr><th>Hash</th><th>Direction</th><th>Amount</th><th>Status</th><th>Time</th></tr>";
        for p in &payments {
            h +=
                &format!(
                "<tr><td class=mono>{}</td><td>{:?}</td><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                esc(&short(&bitcoin::hex::DisplayHex::as_hex(&p.payment_hash.0).to_string())),
                p.direction,
                p.amount_msat
                    .map(|m| format!("{} sat", sat(m)))
                    .unwrap_or_default(),
                p.status,
                ms_time(p.updated_at_ms),
            );
        }
        h += "</table>";
    }
    h += "</section>";
    h += r#"<section id="deliveries"><h2>Webhook deliveries</h2>"#;
    if deliveries.is_empty() {
        h += "<p class=muted>No deliveries yet.</p>";
    } else {
        h += "<table><tr><th>Id</th><th>Event</th><th>Endpoint</th><th>State</th><th>Attempts</th><th>Last status</th></tr>";
        for d in &deliveries {
            h += &format!(
                r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="st-{st}">{st}</td><td>{}</td><td>{}</td></tr>"#,
                d.id,
                esc(&d.event_type),
                d.endpoint_id,
                d.attempts,
                d.last_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| { d.last_error.as_deref().map(esc).unwrap_or_default() }),
                st = d.state,
            );
        }
        h += "</table>";
    }
    h += "</section>";
    h
}

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#222}
header{background:#1d2733;color:#fff;padding:12px 20px;display:flex;justify-content:space-between;align-items:center}
header h1{font-size:18px;margin:0}#live{font-size:13px}
main{display:grid;grid-template-columns:minmax(0,2fr) minmax(0,1fr);gap:16px;padding:16px}
section{background:#fff;border-radius:8px;padding:12px 16px;margin-bottom:16px;box-shadow:0 1px 2px #0002}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eee;vertical-align:top}
.mono{font-family:monospace;word-break:break-all}.muted{color:#888}
.bar{background:#f0c36d;height:10px;border-radius:5px;overflow:hidden;width:100%;min-width:120px}
.bar .local{background:#3c8d5a;height:100%}
.ok,.st-paid,.st-delivered{color:#1a7f37;font-weight:600}.bad,.st-dead,.st-expired,.st-cancelled{color:#b42318}
.st-pending{color:#9a6700}
form label{display:block;font-size:13px;margin-top:6px}form input{width:100%;box-sizing:border-box;padding:4px}
button{margin-top:10px;padding:6px 14px}textarea{width:100%;font-family:monospace;font-size:11px}
#created-qr svg,#created-qr img{width:220px;height:220px}#create-error{color:#b42318}
"#;

const SCRIPT: &str = r#"
const csrf={'x-lightkeeper-csrf':'1','content-type':'application/json'};
async function refresh(){
  const r=await fetch('/ui/sections',{credentials:'same-origin'});
  if(r.ok){document.getElementById('sections').innerHTML=await r.text();}
  const id=document.getElementById('created-id').textContent;
  if(id){const i=await fetch('/v1/invoices/'+encodeURIComponent(id));
    if(i.ok){const v=await i.json();const s=document.getElementById('created-status');s.textContent=v.status;s.className='st-'+v.status;}}
}
let timer=null;function soon(){clearTimeout(timer);timer=setTimeout(refresh,150);}
function live(){
  const es=new EventSource('/v1/events/stream');
  es.onopen=()=>{document.getElementById('live').textContent='live';};
  es.onmessage=()=>soon();
  es.onerror=()=>{document.getElementById('live').textContent='reconnecting…';};
}
document.getElementById('create').addEventListener('submit',async(e)=>{
  e.preventDefault();const f=e.target;const body={};
  if(f.numero.value)body.numero=f.numero.value;
  if(f.amount.value){body.amount=f.amount.value;body.currency=f.currency.value||'EUR';}
  if(f.sats.value)body.sats=parseInt(f.sats.value,10);
  if(f.description.value)body.description=f.description.value;
  if(f.expiry.value)body.expiry_hours=parseInt(f.expiry.value,10);
  const err=document.getElementById('create-error');err.textContent='';
  const r=await fetch('/v1/invoices',{method:'POST',headers:csrf,body:JSON.stringify(body)});
  const v=await r.json();
  if(!r.ok){err.textContent=v.message||('HTTP '+r.status);return;}
  document.getElementById('created').style.display='block';
  document.getElementById('created-id').textContent=v.id;
  document.getElementById('created-bolt11').value=v.bolt11;
  const s=document.getElementById('created-status');s.textContent=v.status;s.className='st-'+v.status;
  document.getElementById('created-amount').textContent=(v.amount_sats!=null?v.amount_sats+' sat':'open amount')+(v.amount_fiat?' ('+v.amount_fiat+' '+v.currency+' at '+v.exchange_rate+', '+v.rate_source+')':'');
  const q=await fetch('/v1/invoices/'+encodeURIComponent(v.id)+'/qr.svg');
  document.getElementById('created-qr').innerHTML=q.ok?await q.text():'';
  soon();
});
live();setInterval(refresh,15000);
"#;

const LOGIN: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Lightkeeper</title>
<style>body{font-family:system-ui,sans-serif;display:flex;justify-content:center;margin-top:80px}form{width:420px}input{width:100%;padding:6px}</style></head>
<body><form id="login"><h1>Lightkeeper merchant</h1><p>Paste an API token (scope read, invoices or admin).</p>
<input name="token" id="token" autocomplete="off" placeholder="lk_..."><button>Open dashboard</button></form>
<script>
function setTok(t){document.cookie='lk_token='+encodeURIComponent(t.trim())+'; path=/; SameSite=Strict';location.replace('/');}
const m=location.hash.match(/token=([^&]+)/);if(m){setTok(decodeURIComponent(m[1]));}
document.getElementById('login').addEventListener('submit',e=>{e.preventDefault();setTok(document.getElementById('token').value);});
</script></body></html>"#;

/// An optional [`Auth`]: the dashboard shows the login form instead of an error.
pub struct MaybeAuth(Option<Auth<READ>>);

impl FromRequestParts<Arc<ApiContext>> for MaybeAuth {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &Arc<ApiContext>,
    ) -> Result<Self, Self::Rejection> {
        Ok(MaybeAuth(
            Auth::<READ>::from_request_parts(parts, ctx).await.ok(),
        ))
    }
}

/// The dashboard page (or the login form without a valid token cookie).
#[utoipa::path(get, path = "/", tag = "dashboard", security(()),
    responses((status = 200, description = "HTML dashboard", content_type = "text/html")))]
pub async fn page(auth: MaybeAuth, State(ctx): State<Arc<ApiContext>>) -> Response {
    let Some(Auth(token)) = auth.0 else {
        return Html(LOGIN).into_response();
    };
    let sections = render_sections(&ctx).await;
    let can_create = token.scope.allows(super::auth::Scope::Invoices);
    let form = if can_create {
        r#"<section><h2>New invoice</h2><form id="create">
<label>Number (id) <input name="numero" placeholder="INV-001"></label>
<label>Fiat amount <input name="amount" placeholder="500.00"></label>
<label>Currency <input name="currency" value="EUR"></label>
<label>or sats <input name="sats" placeholder="25000"></label>
<label>Description <input name="description" placeholder="Order 42"></label>
<label>Expiry (hours) <input name="expiry" placeholder="24"></label>
<button type="submit" id="create-btn">Create invoice</button><div id="create-error"></div></form>
<div id="created" style="display:none"><h2>Invoice <span id="created-id"></span>: <span id="created-status"></span></h2>
<p id="created-amount"></p><div id="created-qr"></div><textarea id="created-bolt11" rows="5" readonly></textarea></div></section>"#
    } else {
        r#"<section><p class=muted>This token cannot create invoices.</p><span id="created-id" hidden></span></section>"#
    };
    let html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Lightkeeper merchant</title><style>{STYLE}</style></head>
<body><header><h1>Lightkeeper merchant</h1><span>token: {name} ({scope}) · <span id="live">connecting…</span></span></header>
<main><div id="sections">{sections}</div><div>{form}</div></main><script>{SCRIPT}</script></body></html>"#,
        name = esc(&token.name),
        scope = token.scope.as_str(),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// The live sections as an HTML fragment (the dashboard re-renders with it).
#[utoipa::path(get, path = "/ui/sections", tag = "dashboard",
    responses((status = 200, description = "HTML fragment", content_type = "text/html")))]
pub async fn sections(_a: Auth<READ>, State(ctx): State<Arc<ApiContext>>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(render_sections(&ctx).await),
    )
        .into_response()
}
