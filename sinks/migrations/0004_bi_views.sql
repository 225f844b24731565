-- Views for analysts. They read with FINAL, so re-delivered rows never count twice.
-- Days and hours are UTC; for local-time reporting group kpi_window by toDate(window_start, 'Europe/Berlin').

-- kpi_hourly: the hourly windows as the engine computed them (exact, percentiles included).
-- Needs 3600 in CALLPULSE_WINDOW_SIZES_S (the default).
CREATE VIEW IF NOT EXISTS $db.kpi_hourly AS
SELECT
    window_start AS hour,
    dimension,
    dimension_value,
    offered,
    answered,
    abandoned,
    short_abandoned,
    answer_rate,
    abandon_rate,
    service_level,
    sl_threshold_s,
    service_level_at,
    asa_seconds,
    longest_wait_seconds,
    handled,
    aht_seconds,
    transfer_rate,
    repeat_contact_rate,
    staffed_agents,
    occupancy,
    tickets_created,
    tickets_resolved,
    first_response_p90_seconds,
    resolution_p90_seconds,
    sla_breach_rate,
    backlog,
    survey_responses,
    csat_mean,
    csat_top2_ratio,
    nps,
    ces_mean
FROM $db.kpi_window FINAL
WHERE window_size_s = 3600;

-- kpi_daily: UTC days re-aggregated from the hourly windows. Counts are summed and every ratio
-- is recomputed from the summed counts (never an average of hourly ratios). Service level here
-- is the default variant: answered within X / (answered + abandoned - short abandons).
-- Percentiles cannot be summed and are left out (use ticket_events for daily percentiles).
-- kpi_daily_totals: the sums kpi_daily divides (a view of its own: ClickHouse 18.16 lets the
-- aliases of an outer query leak into its subqueries).
CREATE VIEW IF NOT EXISTS $db.kpi_daily_totals AS
SELECT
    toDate(window_start) AS day,
    dimension,
    dimension_value,
    sum(offered) AS s_offered,
    sum(answered) AS s_answered,
    sum(abandoned) AS s_abandoned,
    sum(short_abandoned) AS s_short_abandoned,
    any(sl_threshold_s) AS s_sl_threshold_s,
    sumForEach(answered_within) AS s_answered_within,
    -- the denominator repeated per threshold: lambdas must not capture columns (18.16 loses them)
    sumForEach(arrayResize(emptyArrayUInt64(), length(answered_within), toUInt64(answered + abandoned - short_abandoned)))
        AS s_sl_denominator,
    sum(ifNull(asa_seconds, 0) * answered) AS s_answered_wait_sum,
    max(longest_wait_seconds) AS s_longest_wait_seconds,
    sum(handled) AS s_handled,
    sum(ifNull(aht_seconds, 0) * handled) AS s_handle_sum,
    sum(transferred) AS s_transferred,
    sum(logged_in_seconds) AS s_logged_in_seconds,
    sum(ready_seconds) AS s_ready_seconds,
    sum(busy_seconds + acw_state_seconds) AS s_working_seconds,
    sum(tickets_created) AS s_tickets_created,
    sum(tickets_resolved) AS s_tickets_resolved,
    sum(sla_evaluated) AS s_sla_evaluated,
    sum(sla_breached) AS s_sla_breached,
    argMax(backlog, window_start) AS s_backlog_at_end,
    sum(csat_responses) AS s_csat_responses,
    sum(ifNull(csat_mean, 0) * csat_responses) AS s_csat_sum,
    sum(ifNull(csat_top2_ratio, 0) * csat_responses) AS s_csat_top2,
    sum(nps_responses) AS s_nps_responses,
    sum(ifNull(nps, 0) * nps_responses) AS s_nps_points,
    sum(ces_responses) AS s_ces_responses,
    sum(ifNull(ces_mean, 0) * ces_responses) AS s_ces_sum
FROM $db.kpi_window FINAL
WHERE window_size_s = 3600
GROUP BY day, dimension, dimension_value;

CREATE VIEW IF NOT EXISTS $db.kpi_daily AS
SELECT
    day,
    dimension,
    dimension_value,
    s_offered AS offered,
    s_answered AS answered,
    s_abandoned AS abandoned,
    s_short_abandoned AS short_abandoned,
    s_answered / nullIf(s_offered, 0) AS answer_rate,
    s_abandoned / nullIf(s_offered, 0) AS abandon_rate,
    s_sl_threshold_s AS sl_threshold_s,
    s_answered_within AS answered_within,
    arrayMap((x, d) -> x / nullIf(d, 0), s_answered_within, s_sl_denominator) AS service_level_at,
    s_answered_wait_sum / nullIf(s_answered, 0) AS asa_seconds,
    s_longest_wait_seconds AS longest_wait_seconds,
    s_handled AS handled,
    s_handle_sum / nullIf(s_handled, 0) AS aht_seconds,
    s_transferred AS transferred,
    s_transferred / nullIf(s_handled, 0) AS transfer_rate,
    s_logged_in_seconds / 86400 AS staffed_agents,
    s_working_seconds / nullIf(s_ready_seconds + s_working_seconds, 0) AS occupancy,
    s_tickets_created AS tickets_created,
    s_tickets_resolved AS tickets_resolved,
    s_sla_evaluated AS sla_evaluated,
    s_sla_breached AS sla_breached,
    s_sla_breached / nullIf(s_sla_evaluated, 0) AS sla_breach_rate,
    s_backlog_at_end AS backlog_at_end,
    s_csat_responses AS csat_responses,
    s_csat_sum / nullIf(s_csat_responses, 0) AS csat_mean,
    s_csat_top2 / nullIf(s_csat_responses, 0) AS csat_top2_ratio,
    s_nps_responses AS nps_responses,
    s_nps_points / nullIf(s_nps_responses, 0) AS nps,
    s_ces_responses AS ces_responses,
    s_ces_sum / nullIf(s_ces_responses, 0) AS ces_mean
FROM $db.kpi_daily_totals;

-- agent_scorecard: per agent and UTC day, from the raw events. handled = ended contacts,
-- AHT = talk + hold + after-call work per ended contact, CSAT = mean of surveys naming the agent.
CREATE VIEW IF NOT EXISTS $db.agent_scorecard AS
SELECT
    day,
    agent AS agent_id,
    handled,
    aht_seconds,
    avg_talk_seconds,
    transferred,
    rona,
    csat_responses,
    if(csat_responses = 0, NULL, csat_sum / csat_responses) AS csat_mean
FROM
(
    SELECT
        toDate(ts) AS day,
        assumeNotNull(agent_id) AS agent,
        countIf(kind = 'ended') AS handled,
        sumIf(ifNull(talk_seconds, 0) + ifNull(hold_seconds, 0) + ifNull(acw_seconds, 0), kind = 'ended')
            / nullIf(countIf(kind = 'ended'), 0) AS aht_seconds,
        sumIf(ifNull(talk_seconds, 0), kind = 'ended') / nullIf(countIf(kind = 'ended'), 0) AS avg_talk_seconds,
        countIf(kind = 'transferred') AS transferred,
        countIf(kind = 'ring_no_answer') AS rona
    FROM $db.call_events FINAL
    WHERE agent_id IS NOT NULL
    GROUP BY day, agent
) AS handled_by_agent
ANY LEFT JOIN
(
    SELECT
        toDate(ts) AS day,
        assumeNotNull(agent_id) AS agent,
        toUInt64(count(csat)) AS csat_responses,
        toFloat64(sum(ifNull(csat, 0))) AS csat_sum
    FROM $db.survey_responses FINAL
    WHERE agent_id IS NOT NULL
    GROUP BY day, agent
) AS rated_by_agent USING (day, agent);

-- ticket_aging: one row per ticket with its latest state. Open = the latest event is not
-- resolved/closed; age runs to now() while open, to the last event once resolved.
CREATE VIEW IF NOT EXISTS $db.ticket_aging AS
SELECT
    ticket_id,
    t_created_at AS created_at,
    t_category AS category,
    t_priority AS priority,
    t_team AS team,
    t_channel AS channel,
    t_business_type AS business_type,
    t_sla_due AS sla_due,
    t_last_kind AS last_kind,
    t_last_status AS last_status,
    t_last_event_at AS last_event_at,
    t_last_kind NOT IN ('resolved', 'closed') AS is_open,
    if(is_open, now(), toDateTime(t_last_event_at)) AS age_until,
    dateDiff('second', toDateTime(t_created_at), age_until) AS age_seconds,
    multiIf(
        age_seconds < 3600, '0-1h',
        age_seconds < 4 * 3600, '1-4h',
        age_seconds < 86400, '4-24h',
        age_seconds < 3 * 86400, '1-3d',
        '3d+') AS age_bucket,
    isNotNull(t_sla_due) AND age_until > toDateTime(assumeNotNull(t_sla_due)) AS sla_breached
FROM
(
    SELECT
        ticket_id,
        min(created_at) AS t_created_at,
        any(category) AS t_category,
        argMax(priority, ts) AS t_priority,
        argMax(team, ts) AS t_team,
        any(channel) AS t_channel,
        any(business_type) AS t_business_type,
        argMax(sla_due, ts) AS t_sla_due,
        argMax(kind, ts) AS t_last_kind,
        argMax(status, ts) AS t_last_status,
        max(ts) AS t_last_event_at
    FROM $db.ticket_events FINAL
    GROUP BY ticket_id
);
