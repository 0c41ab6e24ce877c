"""Definitions as immutable objects: what the rest of the runtime reads, never raw YAML."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from ..fieldtypes import FIELD_TYPES, FieldType
from .yamlsource import Location

ROOT = "definitions"  # the definitions folder, as file locations name it wherever the folder is

SYS_FIELDS = (
    "sys_id",
    "sys_class_name",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
)


def frozen_map(items: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    table: str  # the table that declares it
    label: str
    mandatory: bool = False
    read_only: bool = False
    max_length: int | None = None
    default: Any = None
    default_now: bool = False  # `default: now`: a new record takes the moment it is written (see `initial`)
    choices: tuple[tuple[Any, str], ...] = ()
    reference: str | None = None
    description: str = ""
    index: bool | None = None  # None: automatic (references, choices and the display field are indexed)
    system: bool = False
    create_values: tuple[Any, ...] = ()  # read-only fields: values a client may give when it creates a record
    on_delete: str = "clear"  # references: when the referenced record is deleted, clear | delete | restrict
    # references: which records of the referenced table may be picked (a condition Node whose values
    # may be templates over the record being edited: `{{ record.account }}`), or None
    qualifier: Any = None
    # `fill: {from: FIELD, where: QUERY}`: rows the table held before this field existed take FIELD's value
    # once (caseloom.emptyfill): (FIELD, the encoded query, "" for every row), or None
    fill: tuple[str, str] | None = None
    # `audit: false`: a change of the field leaves no sys_audit row (bookkeeping a machine writes often, as
    # ServiceNow's `no_audit` attribute); a deleted record's snapshot still holds it
    audit: bool = True

    @cached_property
    def ftype(self) -> FieldType:
        return FIELD_TYPES[self.type]

    @cached_property
    def stored(self) -> bool:
        return self.ftype.column is not None

    @cached_property
    def _choice_labels(self) -> dict[str, str]:
        return {str(value): label for value, label in self.choices}

    @cached_property
    def choice_kind(self) -> str:
        values = [value for value, _ in self.choices]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "integer"
        return "string"

    def choice_label(self, value: Any) -> str | None:
        return self._choice_labels.get(str(value))

    def parse(self, value: Any) -> Any:
        return self.ftype.parse(self, value)

    @property
    def has_default(self) -> bool:
        """Whether a new record given no value takes one (a mandatory field need not be given then)."""
        return self.default is not None or self.default_now

    def initial(self, moment: dt.datetime) -> Any:
        """The value a new record written at `moment` takes when it is given none: the declared default,
        or with `default: now` the moment as the field's type holds it (a date: the day, UTC)."""
        return self.ftype.now(moment) if self.default_now else self.default

    def render(self, value: Any) -> str:
        return self.ftype.render(value)


@dataclass(frozen=True)
class NumberDef:
    prefix: str
    digits: int = 7
    start: int = 1001


@dataclass(frozen=True)
class FormSection:
    title: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class RelatedList:
    table: str
    field: str
    label: str
    on: str | None = None  # a field of this record: the related records are those whose `field` holds its value


@dataclass(frozen=True)
class Setting:
    """A number a definition gives, or the system property that holds it (its value the default)."""

    value: float
    property: str | None = None


@dataclass(frozen=True)
class SimilarSuggest:
    """When a record of a similar list's kind arrives (and on its form): at least `min_records` similar
    records from at least `min_groups` distinct `group_by` values since the start of the day
    `since_days` ago (by `date_field`) raise `message`, kept in the record's `field` (for a list) and
    offering `action`."""

    group_by: str
    min_records: Setting
    min_groups: Setting
    since_days: Setting
    message: str
    action: str | None = None
    field: str | None = None
    date_field: str = "sys_created_on"


@dataclass(frozen=True)
class SimilarDef:
    """A table's similar list (`similar:`): on the forms of its records matching `when`, the records
    matching `condition` whose text is most similar, with a score of at least `min_score`."""

    name: str
    label: str
    table: str
    condition: Any = None  # a condition Node on the table: which records are candidates
    when: Any = None  # a condition Node: on which records' forms (and inserts) it applies
    min_score: Setting = Setting(0.7)
    limit: int = 5
    add_action: str | None = None  # an action of the shown record adding one candidate (`add_input`: its input)
    add_input: str | None = None
    suggest: SimilarSuggest | None = None
    location: Location | None = None


@dataclass(frozen=True)
class TableDef:
    name: str
    label: str
    extends: str | None
    root: str  # the hierarchy's root table: the physical table that stores the rows
    fields: Mapping[str, FieldDef]  # own and inherited, sys fields included
    number: NumberDef | None = None
    display: str | None = None
    list_columns: tuple[str, ...] = ()
    form: tuple[FormSection, ...] = ()
    related_lists: tuple[RelatedList, ...] = ()
    indexes: tuple[tuple[str, ...], ...] = ()
    description: str = ""
    system: bool = False
    audit: bool = True  # its changes and deletions are kept in sys_audit (history); false for machine records
    text_index: tuple[str, ...] = ()  # text fields in a full-text index (quick search, 123TEXTQUERY321, similar)
    contains_index: tuple[str, ...] = ()  # fields whose "contains" searches an index serves (caseloom.containsindex)
    similar: tuple[SimilarDef, ...] = ()  # its similar lists (caseloom.similar)
    location: Location | None = None

    def field(self, name: str) -> FieldDef | None:
        return self.fields.get(name)

    @cached_property
    def stored_fields(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields.values() if f.stored)

    @cached_property
    def keeps_suggestions(self) -> bool:
        """Whether a similar list keeps a suggestion in a field: a record made one at a time is searched
        for it after commit (caseloom.similar)."""
        return any(s.suggest is not None and s.suggest.field for s in self.similar)

    @cached_property
    def journal_fields(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields.values() if f.ftype.journal)


@dataclass(frozen=True)
class PropertyDef:
    name: str
    type: str  # boolean | integer | string | list
    default: Any
    description: str = ""
    choices: tuple[str, ...] = ()
    location: Location | None = None
    minimum: float | None = None  # integer and decimal properties: the smallest value allowed
    maximum: float | None = None

    @property
    def range_words(self) -> str:
        """`1 to 60`, `at least 0`, `at most 100`, or "" when no range is declared."""
        low, high = bound_text(self.minimum), bound_text(self.maximum)
        return f"{low} to {high}" if low and high else f"at least {low}" if low else f"at most {high}" if high else ""

    def out_of_range(self, value: Any) -> str | None:
        """Why a parsed value is outside the declared range (`min`, `max`), or None."""
        low, high = self.minimum, self.maximum
        if (low is None or value >= low) and (high is None or value <= high):
            return None
        return f"must be {'from ' if low is not None and high is not None else ''}{self.range_words}"


def bound_text(value: float | None) -> str:
    """A range bound as written: 0.5, 10; "" for none."""
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class RoleDef:
    name: str
    description: str = ""
    contains: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessRule:
    """One access rule (ServiceNow's ACL): on a table, or one of its fields (`field_name`; "*": every
    field), for some operations; a user needs one of `roles` (none: any user) and, for a table
    rule, the record must match `condition`. `decision`: allow_if, or deny_unless (must pass too)."""

    table: str
    operations: tuple[str, ...]
    roles: tuple[str, ...]
    field_name: str | None = None
    decision: str = "allow_if"
    condition: Any = field(default=None, compare=False)  # a query Node (None: every record)
    condition_text: str = ""
    location: Location | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """As ServiceNow names an ACL: `table`, `table.field` or `table.*`."""
        return self.table if self.field_name is None else f"{self.table}.{self.field_name}"


@dataclass(frozen=True)
class SenderDef:
    """Who a new e-mail is from: the record of `table` whose `email` field is the sender's address,
    and the values it gives the new record (templates over `sender`)."""

    table: str
    email: str
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class AlertMake:
    """A record an alert rule creates: its table and values (templates naming `alert`, `affected`,
    `count` and `priority`), a member list of the affected set on its `list_field`, an action run on it, and
    its `alert_field`: a reference back to the alert, so that every record an alert made hears of its clearing."""

    table: str
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    list_field: str | None = None
    list_values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    action: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    alert_field: str | None = None


@dataclass(frozen=True)
class AlertRuleDef:
    """What an open alert makes for the people it affects (the distinct `who` of the `affected` table's
    records on the alert's node): at least `threshold` of them, the `major` record (with a member list of
    them); fewer, the `single` record for the one. The record goes in the alert's `link` reference, once.
    When the alert closes, the linked record gets the `cleared` journal entry and action."""

    name: str
    link: str
    affected_table: str
    affected_node: str
    affected_who: str
    major: AlertMake
    condition: Any = field(default=None, compare=False)
    affected_condition: Any = field(default=None, compare=False)
    threshold: int = 2
    threshold_property: str | None = None
    priority: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    single: AlertMake | None = None
    cleared_journal: tuple[str, str] | None = None
    cleared_action: str | None = None
    cleared_inputs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class InboundActionDef:
    """What an e-mail received does (ServiceNow's inbound e-mail actions): `new` creates a record of
    `table` from it; `reply` adds it to the record it answers as an entry of the journal field
    `comment`. The first action by `order` whose `condition` (on the sys_email row) holds runs."""

    name: str
    table: str
    type: str  # new | reply
    order: int = 100
    condition: Any = field(default=None, compare=False)
    comment: str | None = None
    senders: tuple[SenderDef, ...] = ()
    values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    closed: Any = field(default=None, compare=False)  # a reply to a record matching it: (condition, reopen, link)
    closed_reopen: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    closed_link: str | None = None
    effects: tuple = ()
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PortalDef:
    """A portal at /`name` for users whose roles are `roles` (customers): their records of `table`
    (as their access rules allow), each with the entries of one journal field (`comment`)."""

    name: str
    title: str
    roles: tuple[str, ...]
    table: str
    comment: str
    list_columns: tuple[str, ...] = ()
    open: Any = field(default=None, compare=False)  # which records are open (None: every one)
    action_needed: Any = field(default=None, compare=False)  # which wait for the user, shown first
    show: tuple[str, ...] = ()
    create_fields: tuple[str, ...] = ()  # none: the portal creates no records
    create_values: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    actions: tuple[str, ...] = ()
    parent: str | None = None  # a reference to the record whose `comment` entries show here too
    description: str = ""
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Aggregate:
    """A report's number: `function` of a field (`measured`), of a duration between two date-time fields
    (`span`), or, for percent, the share of the records that also meet `share`."""

    function: str = "count"
    measured: str | None = None
    span: tuple[str, str] | None = None
    share: Any = field(default=None, compare=False)
    share_label: str = ""


@dataclass(frozen=True)
class ReportDef:
    """A chart, a single score or a list over the records of `table` that match `condition`: counted (or
    summed, averaged, ...) per value of `group_by` (and `stack_by`), per period of `trend`, or listed."""

    name: str
    title: str
    table: str
    kind: str  # bar, horizontal_bar, stacked_bar, pie, donut, line, area, score, list
    condition: Any = field(default=None, compare=False)  # a condition node (None: every record)
    condition_text: str = ""
    group_by: str | None = None
    stack_by: str | None = None
    trend: str | None = None  # a date or date-time field: the time axis of a line or area
    per: str = "day"  # the trend's period: day, week or month
    date_field: str = "sys_created_on"  # what a dashboard's date range filters on
    ranged: bool = True  # False: the date range does not apply (a backlog: every open record)
    function: str = "count"
    measured: str | None = None  # the aggregated field (count: none)
    span: tuple[str, str] | None = None  # an aggregated duration: seconds from the first field to the second
    columns: tuple[str, ...] = ()  # a list's
    order_by: str | None = None  # a list's sort (`-` first: descending)
    limit: int = 10  # a list's rows; a chart's groups beyond it are summed as "Other"
    roles: tuple[str, ...] = ()  # who may open it, besides read access to its table (none: anyone with that)
    description: str = ""
    location: Location | None = field(default=None, compare=False)
    also: Aggregate | None = None  # a score's second number
    share: Any = field(default=None, compare=False)  # percent: the condition node of the records counted as the share
    share_label: str = ""  # percent: what the share is, in words ("resolved by the first agent")


@dataclass(frozen=True)
class DashboardDef:
    """A grid of reports with one date range (`range`: days, or "all"), the home page of `roles` when `home`."""

    name: str
    title: str
    roles: tuple[str, ...]
    reports: tuple[str, ...]
    home: bool = False
    range: int | str = 30
    description: str = ""
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class DemoUser:
    user_name: str
    password: str
    roles: tuple[str, ...]
    values: Mapping[str, Any] = field(default_factory=frozen_map)


@dataclass(frozen=True)
class DemoGenerator:
    """Rows of one table, `count` fixed or `per_account` times the --accounts scale."""

    name: str
    table: str
    values: Mapping[str, Any]
    count: int | None = None
    per_account: float | None = None


@dataclass(frozen=True)
class DemoSet:
    users: tuple[DemoUser, ...] = ()
    generators: tuple[DemoGenerator, ...] = ()


@dataclass(frozen=True)
class InputDef:
    """Something an action asks for: a field of the record, or a free value (`reason`)."""

    name: str
    label: str
    type: str  # the field's type, or string | text | records | boolean | choice
    mandatory: bool = False
    field: bool = False  # True: the value is written to the record's field of that name
    table: str | None = None  # records inputs: which table the sys_ids belong to
    choices: tuple[tuple[Any, str], ...] = ()
    # records inputs: which records a person may pick (a condition Node on `table` whose values may be
    # templates over the action's record), or None for any record of the table
    candidates: Any = None


@dataclass(frozen=True)
class EffectDef:
    kind: str  # a name in the effect registry
    args: Any
    location: Location | None = None


@dataclass(frozen=True)
class ActionDef:
    """A declared action or a lifecycle transition: a button, and POST /api/caseloom/actions/..."""

    name: str
    table: str
    label: str
    roles: tuple[str, ...] = ()
    from_states: tuple[Any, ...] | None = None  # transitions: the states it may start from
    to_state: Any = None
    field: str | None = None  # transitions: the lifecycle's field
    condition: Any = None  # a condition Node, or None
    refusal: str = ""  # what a 409 says when the condition does not hold
    inputs: tuple[InputDef, ...] = ()
    effects: tuple[EffectDef, ...] = ()
    background: bool = False
    confirm: bool = False  # the browser says what it will do, in numbers, before it runs
    style: str = "secondary"
    order: int = 100
    location: Location | None = None


@dataclass(frozen=True)
class StateDef:
    value: Any
    label: str
    read_only: tuple[str, ...] = ()
    mandatory: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class LifecycleDef:
    name: str
    table: str
    field: str
    states: Mapping[Any, StateDef]

    def state(self, value: Any) -> StateDef | None:
        for key, state in self.states.items():
            if str(key) == str(value):
                return state
        return None


@dataclass(frozen=True)
class RuleDef:
    name: str
    table: str
    when: str  # before | after
    on: tuple[str, ...]  # insert | update | delete
    condition: Any = None
    effects: tuple[EffectDef, ...] = ()
    order: int = 100
    location: Location | None = None


@dataclass(frozen=True)
class NotificationDef:
    name: str
    table: str
    subject: str
    body: str
    on: tuple[str, ...] = ()  # fire on these writes when the condition holds; empty: only by a notify effect
    condition: Any = None
    roles: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # reference paths to users, contacts... whose email receives it
    children: Any = None  # (reference, field, only-condition): one email to each child record's contact
    sent_field: str | None = None  # a date-time field of the record an e-mail is filed under, set when one is sent


@dataclass(frozen=True)
class MenuModule:
    label: str
    table: str | None = None
    query: str = ""
    page: str | None = None  # a built-in page instead of a list: properties | new (a new record form)
    roles: tuple[str, ...] = ()
    view: str | None = None  # a workspace's list view (its columns)

    def query_for(self, user_sys_id: str | None) -> str:
        """The module's encoded query for one user: `{me}` is that user's sys_id."""
        return self.query.replace("{me}", user_sys_id or "")


@dataclass(frozen=True)
class WorkspaceDef:
    """The page of a record that has children through a reference (a major case and its child cases):
    its summary, its children counted by state, its affected customers, its communications and its
    timeline at a glance; and a list view of such records (`list`, named by modules' `view:`)."""

    name: str
    table: str
    label: str
    children: str  # the children's reference field to this record
    child_table: str
    when: Any = None  # a condition Node: which records are workspaces (all when None)
    summary: tuple[str, ...] = ()
    members: str | None = None  # a reference field to a member-list record (CSM: the affected customers)
    members_label: str | None = None
    attention: str | None = None  # a boolean field of the children
    communications: tuple[str, ...] = ()  # journal fields whose entries reach customers
    timeline: tuple[str, ...] = ()
    age_from: str = "sys_created_on"
    columns: tuple[str, ...] = ()  # its list view (YAML `list`): field paths, `children` and `age`
    location: Location | None = None


@dataclass(frozen=True)
class MenuApplication:
    label: str
    modules: tuple[MenuModule, ...]
    roles: tuple[str, ...] = ()
    order: int = 100


@dataclass(frozen=True)
class MemberType:
    """One type of a member list: members are records of `table`, kept in `members`."""

    name: str
    table: str
    members: str
    list_field: str
    member_field: str
    match: tuple[str, ...] = ("sys_id",)  # import keys, tried in order
    result_key: str | None = None  # a script may answer {result_key: [sys_id, ...]}


@dataclass(frozen=True)
class MemberListDef:
    name: str
    table: str
    type_field: str
    types: Mapping[str, MemberType]
    conditions_field: str | None = None
    script_flag_field: str | None = None
    script_field: str | None = None
    dynamic_field: str | None = None


@dataclass(frozen=True)
class DeclaredList:
    """A list declared in YAML (`recipients_list: name`), created or updated by `caseloom init`."""

    name: str
    member_list: str
    type: str
    conditions: str | None = None
    script: str | None = None
    import_text: str | None = None
    description: str = ""


@dataclass(frozen=True)
class BenchDef:
    """What `caseloom bench` measures for an application: generators of data (per unit of the
    scale), a member list built by its condition, a parent record pointing at it, the action that
    makes one child per member, an update that syncs to the children, one that closes them, and
    the table whose list and form pages are timed."""

    generators: tuple[DemoGenerator, ...]
    list_table: str
    list_values: Mapping[str, Any]
    list_action: str
    parent_table: str
    parent_values: Mapping[str, Any]
    list_field: str
    create_action: str
    create_inputs: Mapping[str, Any]
    sync_values: Mapping[str, Any]
    close_values: Mapping[str, Any]
    views_table: str
    properties: Mapping[str, Any] = field(default_factory=frozen_map)
    names: Mapping[str, str] = field(default_factory=frozen_map)  # step (list, create, sync, close) -> benchmark
    portal: str | None = None  # a portal whose home page the customer login opens (portal_list)
    customer_roles: tuple[str, ...] = ()  # a login for the access-rule benchmarks (none: they do not run)
    customer_values: Mapping[str, Any] = field(default_factory=frozen_map)  # {ref: generator, row: N} allowed
    group_by: tuple[str, ...] = ()  # what the Aggregate API counts the views table by (stats_group_by); (): not run
    dashboard: str | None = None  # a dashboard opened with every report on it (dashboard_view); None: not run
    search: str | None = None  # a list's quick search for these words (quick_search); None: not run
    similar: str | None = None  # a similar list of the views table (similar_cases); None: not run
    email_count: int = 0  # inbound e-mails (email_ingest): half new, half replies; 0: not run
    email_sender: tuple[str, str] | None = None  # (generator, its e-mail field): message i is from row i
    event_count: int = 0  # events sent in (event_ingest); 0: not run
    event_keys: int = 100  # distinct message keys (nodes) they fold into
    event_batch: int = 1000  # events per request


@dataclass(frozen=True)
class ScheduleDecl:
    """A business schedule declared in the definitions (`schedules:`), written to a cmn_schedule record."""

    name: str
    label: str
    time_zone: str
    windows: str  # the text form (caseloom.timing.schedule): one line per weekday range
    holidays: str
    location: Location | None = None


@dataclass(frozen=True)
class Escalation:
    at: int  # a percentage of the SLA's duration
    effects: tuple[EffectDef, ...]


@dataclass(frozen=True)
class SlaFlow:
    """A named set of escalations (ServiceNow's SLA flow), declared in the definitions (`sla_flows:`):
    SLAs of its table, or of a table extending it, name it in their `flow`, declared ones and those
    added in the browser alike. A `default` flow is what a new SLA definition of such a table gets."""

    name: str
    table: str
    escalations: tuple[Escalation, ...]
    default: bool = False
    location: Location | None = None


@dataclass(frozen=True)
class SlaDecl:
    """An SLA definition declared in the definitions (`slas:`), written to a contract_sla record; its
    escalations live only here (the record names it)."""

    name: str
    table: str
    duration: int  # seconds
    start: str  # encoded queries
    stop: str = ""
    pause: str = ""
    resume: str = ""
    cancel: str = ""
    reset: str = ""
    schedule: str | None = None
    timezone_source: str = "schedule"
    timezone: str = ""
    when_to_cancel: str = "no_match"
    when_to_resume: str = "no_match"
    retroactive: str | None = None  # a date-time field the SLA starts from
    active: bool = True
    escalations: tuple[Escalation, ...] = ()
    location: Location | None = None
    flow: str | None = None  # a declared SLA flow whose escalations it has (instead of its own)


@dataclass(frozen=True)
class TimerDef:
    """Effects that run on a record once it has matched `condition` for `duration` (business time when
    `schedule` is set), or at its `at` field's value plus `offset`; cancelled when the condition stops
    matching (caseloom.timing.timers)."""

    name: str
    table: str
    effects: tuple[EffectDef, ...]
    condition: str = ""  # an encoded query
    duration: int | None = None  # seconds, with `condition`
    schedule: str | None = None
    at: str | None = None  # a date or date-time field
    offset: int = 0  # seconds, may be negative
    location: Location | None = None


@dataclass(frozen=True)
class DefinitionFile:
    path: str  # relative to its folder
    kind: str
    version: str  # a hash of the text


@dataclass(frozen=True)
class Definitions:
    tables: Mapping[str, TableDef]
    properties: Mapping[str, PropertyDef]
    roles: Mapping[str, RoleDef]
    access: tuple[AccessRule, ...]
    demo: DemoSet
    files: tuple[DefinitionFile, ...] = ()
    lifecycles: Mapping[str, LifecycleDef] = field(default_factory=frozen_map)
    actions: tuple[ActionDef, ...] = ()
    rules: tuple[RuleDef, ...] = ()
    notifications: Mapping[str, NotificationDef] = field(default_factory=frozen_map)
    menu: tuple[MenuApplication, ...] = ()
    member_lists: Mapping[str, MemberListDef] = field(default_factory=frozen_map)
    declared_lists: tuple[DeclaredList, ...] = ()
    bench: BenchDef | None = None
    workspaces: Mapping[str, WorkspaceDef] = field(default_factory=frozen_map)
    sla_root: str | None = None  # the table declaring `sla: true`: SLAs attach to it and the tables extending it
    schedules: Mapping[str, ScheduleDecl] = field(default_factory=frozen_map)
    slas: Mapping[str, SlaDecl] = field(default_factory=frozen_map)
    sla_flows: Mapping[str, SlaFlow] = field(default_factory=frozen_map)
    timers: Mapping[str, TimerDef] = field(default_factory=frozen_map)
    warnings: tuple = ()  # DefinitionErrors that do not stop the definitions loading: known pitfalls
    inbound_email: tuple[InboundActionDef, ...] = ()  # by order
    portals: Mapping[str, PortalDef] = field(default_factory=frozen_map)
    reports: Mapping[str, ReportDef] = field(default_factory=frozen_map)
    alert_rules: tuple[AlertRuleDef, ...] = ()
    dashboards: Mapping[str, DashboardDef] = field(default_factory=frozen_map)
    root: str = ROOT  # what the application's files' locations begin with: the folder as it was given

    def portable(self, path: str) -> str:
        """A location's file as `definitions/<path in the folder>`, wherever the folder was read from (the
        system's own files as they are): what records store, so moving the folder changes none of them."""
        prefix = f"{self.root}/"
        return f"{ROOT}/{path[len(prefix):]}" if path.startswith(prefix) else path

    @cached_property
    def derived(self) -> dict:
        """What other modules build from these definitions alone, once, keyed by the builder (the
        storage's MetaData): it lives as long as the definitions, shared by every runtime on them."""
        return {}

    def dashboards_of(self, roles: frozenset[str]) -> list[DashboardDef]:
        """The dashboards a user with `roles` may open (admin: every one), their home ones first."""
        held = self.role_closure(roles)
        found = [d for d in self.dashboards.values() if "admin" in roles or set(d.roles) & held]

        def senior(d: DashboardDef) -> int:  # the role of the user's that contains the most others
            return max((len(self.role_closure({r})) for r in d.roles if r in held), default=0)

        # a dashboard of the user's most senior role first: a manager's before that of a role it contains
        return sorted(found, key=lambda d: (not d.home, -senior(d), d.title))

    def portal_of(self, roles: frozenset[str]) -> PortalDef | None:
        """The portal of a user all of whose roles are a portal's (a customer, not staff): None for
        everyone else, admin included."""
        if "admin" in roles or not roles:
            return None
        for portal in self.portals.values():
            if roles <= self.role_closure(portal.roles):
                return portal
        return None

    def flow_covers(self, flow: str | None, table: str) -> SlaFlow | None:
        """The declared SLA flow named `flow` when SLAs of `table` may use it (it is of that table or one
        `table` extends), else None."""
        found = self.sla_flows.get(flow or "")
        if found is None or table not in self.tables or found.table not in (table, *self.ancestors(table)):
            return None
        return found

    def default_flow(self, table: str) -> SlaFlow | None:
        """The default SLA flow of a new SLA definition of `table`: its own table's, else the nearest
        table's it extends."""
        if table not in self.tables:
            return None
        for name in (table, *self.ancestors(table)):
            found = next((f for f in self.sla_flows.values() if f.default and f.table == name), None)
            if found is not None:
                return found
        return None

    def escalations_of(self, sla: SlaDecl) -> tuple[Escalation, ...]:
        """A declared SLA's escalations: its own, or its flow's."""
        flow = self.sla_flows.get(sla.flow or "")
        return flow.escalations if flow is not None else sla.escalations

    def timers_for(self, table: str) -> tuple[TimerDef, ...]:
        """The timers watching records of `table` (declared on it or a table it extends)."""
        tables = (table, *self.ancestors(table)) if table in self.tables else (table,)
        return tuple(t for t in self.timers.values() if t.table in tables)

    def workspace_for(self, table: str) -> WorkspaceDef | None:
        """The workspace declared for a table or the nearest table it extends."""
        for name in (table, *self.ancestors(table)):
            found = next((w for w in self.workspaces.values() if w.table == name), None)
            if found is not None:
                return found
        return None

    def member_list_for(self, table: str) -> MemberListDef | None:
        return next((m for m in self.member_lists.values() if m.table == table), None)

    def lifecycle(self, table: str) -> LifecycleDef | None:
        """The lifecycle of a table: its own, or its nearest ancestor's."""
        for name in (table, *self.ancestors(table)):
            if name in self.lifecycles:
                return self.lifecycles[name]
        return None

    def actions_for(self, table: str) -> tuple[ActionDef, ...]:
        """Actions of a table and of the tables it extends, in display order."""
        tables = (table, *self.ancestors(table))
        return tuple(sorted((a for a in self.actions if a.table in tables), key=lambda a: (a.order, a.name)))

    def action(self, table: str, name: str) -> ActionDef | None:
        return next((a for a in self.actions_for(table) if a.name == name), None)

    def rules_for(self, table: str, when: str, event: str) -> tuple[RuleDef, ...]:
        tables = (table, *self.ancestors(table))
        return tuple(sorted((r for r in self.rules if r.table in tables and r.when == when and event in r.on),
                            key=lambda r: (r.order, r.name)))

    def table(self, name: str) -> TableDef:
        return self.tables[name]

    def descendants(self, name: str) -> tuple[str, ...]:
        """The table and every table that extends it, directly or not."""
        found = [name]
        for candidate in self.tables.values():
            if candidate.name != name and name in self.ancestors(candidate.name):
                found.append(candidate.name)
        return tuple(found)

    def lineage(self, name: str) -> tuple[str, ...]:
        """The tables one record of `name` may be known as: the table, those it extends and those extending it."""
        return (*self.descendants(name), *self.ancestors(name))

    def ancestors(self, name: str) -> tuple[str, ...]:
        chain = []
        parent = self.tables[name].extends
        while parent:
            chain.append(parent)
            parent = self.tables[parent].extends
        return tuple(chain)

    def role_closure(self, roles: set[str] | frozenset[str] | tuple[str, ...]) -> frozenset[str]:
        """Roles plus every role they contain, transitively."""
        seen: set[str] = set()
        todo = list(roles)
        while todo:
            role = todo.pop()
            if role in seen:
                continue
            seen.add(role)
            if role in self.roles:
                todo.extend(self.roles[role].contains)
        return frozenset(seen)
