"""The error catalogue and the one JSON shape every non-2xx answer has.

Every error the API can return is listed in ``CATALOGUE`` with its HTTP status and an English and a
Japanese message and remedy. The remedy is written for the flow maker who reads it in Power Automate:
it says what to do next. Handlers raise ``ApiError(code, **details)``; ``shared.endpoints.http`` turns it into::

    {"error": {"code": "...", "message": "...", "remedy": "...", "correlationId": "..."}}

Details fill ``{placeholders}`` in the texts. Details must never hold secrets (callback URLs, tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorText:
    status: int
    message_en: str
    remedy_en: str
    message_ja: str
    remedy_ja: str


CATALOGUE: dict[str, ErrorText] = {
    "InvalidRequest": ErrorText(
        400,
        "The request is not valid: {reason}",
        "Check the request against the connector definition and send it again.",
        "リクエストが正しくありません: {reason}",
        "コネクタ定義に沿ってリクエストを確認し、もう一度送信してください。",
    ),
    "Unauthenticated": ErrorText(
        401,
        "The request has no valid sign-in: {reason}",
        "Sign in again: edit the connection in Power Automate and re-authenticate it.",
        "有効なサインインがありません: {reason}",
        "Power Automate で接続を編集し、もう一度サインインしてください。",
    ),
    "FunctionKeyRequired": ErrorText(
        401,
        "This endpoint needs a function key.",
        "Send the key in the x-functions-key header or the 'code' query parameter.",
        "このエンドポイントには関数キーが必要です。",
        "x-functions-key ヘッダーまたは code クエリ パラメーターでキーを送信してください。",
    ),
    "NotFound": ErrorText(
        404,
        "Nothing is served at {path}.",
        "Check the URL: every route starts with /api/.",
        "{path} には何もありません。",
        "URL を確認してください。すべてのルートは /api/ で始まります。",
    ),
    "MethodNotAllowed": ErrorText(
        405,
        "{method} is not allowed on {path}.",
        "Use one of: {allowed}.",
        "{path} では {method} は使用できません。",
        "次のいずれかを使用してください: {allowed}。",
    ),
    "PayloadTooLarge": ErrorText(
        413,
        "The request body is larger than {limit} bytes.",
        "Send a smaller body.",
        "リクエスト本文が {limit} バイトを超えています。",
        "本文を小さくして送信してください。",
    ),
    "DependencyUnavailable": ErrorText(
        503,
        "A service this app depends on did not answer: {dependency}.",
        "Try again in a few minutes. If it persists, ask the app's administrator to check Application Insights.",
        "このアプリが依存するサービスが応答しませんでした: {dependency}。",
        "数分後にもう一度お試しください。続く場合は管理者に Application Insights の確認を依頼してください。",
    ),
    # --- registration of flows; the remedies are for the flow maker reading Power Automate ---
    "NotBookingsAdministrator": ErrorText(
        403,
        "Only administrators of the Bookings business {business} can do this; your role there: {role}.",
        "Ask an administrator of this Bookings business to create the flow, or to make you an administrator "
        "(Bookings: Staff, role 'Administrator'). Team members, schedulers, viewers and guests cannot.",
        "この操作は Bookings ビジネス {business} の管理者のみが行えます。あなたの役割: {role}。",
        "この Bookings ビジネスの管理者にフローの作成を依頼するか、管理者の役割を付与してもらってください"
        "(Bookings の [スタッフ] で役割を「管理者」に)。"
        "チーム メンバー、スケジューラ、閲覧者、ゲストは作成できません。",
    ),
    "BookingBusinessNotFound": ErrorText(
        404,
        "There is no Bookings business with the address {business}.",
        "Check the business's SMTP address: it is the part after /b/ in its booking page URL "
        "(https://book.ms/b/<address>), or pick the business from the list in the trigger.",
        "アドレス {business} の Bookings ビジネスは見つかりません。",
        "ビジネスの SMTP アドレスを確認してください。"
        "予約ページの URL (https://book.ms/b/<アドレス>) の /b/ の後の部分です。"
        "トリガーの一覧からビジネスを選択することもできます。",
    ),
    "NotificationUrlNotAllowed": ErrorText(
        403,
        "The flow's notification URL is not allowed: {reason}.",
        "Create the trigger from Power Automate, which supplies its own https callback URL. If your Power "
        "Automate environment calls back from a host that is not allowed, ask the app's administrator to add "
        "it to CALLBACK_HOST_ALLOWLIST.",
        "フローの通知 URL は許可されていません: {reason}。",
        "Power Automate からトリガーを作成してください (Power Automate が https のコールバック URL を指定します)。"
        "お使いの Power Automate 環境のホストが許可されていない場合は、アプリの管理者に CALLBACK_HOST_ALLOWLIST への"
        "追加を依頼してください。",
    ),
    "FlowLimitReached": ErrorText(
        429,
        "The Bookings business {business} already has {count} appointment flows, the most allowed ({limit}).",
        "This limit is per Bookings mailbox, not per person. Remove one of the {count} existing flows for this "
        "business, or add actions to one of them instead of creating a new flow. Other administrators of the "
        "business can see who created each flow.",
        "Bookings ビジネス {business} には既に予定フローが {count} 個あり、上限 ({limit}) に達しています。",
        "この上限はユーザーごとではなく Bookings メールボックスごとです。"
        "既存の {count} 個のフローのいずれかを削除するか、"
        "新しいフローを作らずに既存のフローにアクションを追加してください。"
        "各フローの作成者はビジネスの他の管理者が確認できます。",
    ),
    "TooManyConcurrentChanges": ErrorText(
        503,
        "Too many flows of the Bookings business {business} are being changed at the same moment.",
        "Save the flow again in a minute.",
        "Bookings ビジネス {business} のフローが同時に多数変更されています。",
        "1 分ほど待ってから、もう一度フローを保存してください。",
    ),
    "SubscriptionValidationFailed": ErrorText(
        502,
        "Microsoft Graph could not reach this app to confirm change notifications for {business}.",
        "The flow was not saved. Ask the app's administrator to check that the app's public URL "
        "(PUBLIC_BASE_URL) answers from the internet at /api/graph/notifications, then save the flow again.",
        "Microsoft Graph がこのアプリに接続できず、{business} の変更通知を確認できませんでした。",
        "フローは保存されていません。アプリの管理者に、アプリの公開 URL (PUBLIC_BASE_URL) の "
        "/api/graph/notifications がインターネットから応答するか確認を依頼し、もう一度フローを保存してください。",
    ),
    "GraphPermissionMissing": ErrorText(
        502,
        "Microsoft Graph refused this app access to {business} ({graph_code}).",
        "Nothing was saved or cancelled. Ask a Microsoft Entra administrator to grant the app the Graph "
        "application permissions it needs: Calendars.Read and Bookings.Read.All, and to cancel with a reason or book "
        "appointments also "
        "Bookings.ReadWrite.All and BookingsAppointment.ReadWrite.All (see the deployment guide); then try again.",
        "Microsoft Graph がこのアプリの {business} へのアクセスを拒否しました ({graph_code})。",
        "何も保存・キャンセルされていません。Microsoft Entra 管理者に、必要な Graph のアプリケーション アクセス許可 "
        "(Calendars.Read と Bookings.Read.All、理由付きでキャンセルするには Bookings.ReadWrite.All と "
        "BookingsAppointment.ReadWrite.All も) の付与を依頼し (デプロイ ガイドを参照)、もう一度お試しください。",
    ),
    "GraphThrottled": ErrorText(
        503,
        "Microsoft Graph is limiting requests from this app right now.",
        "The flow was not saved. Save it again in {seconds} seconds.",
        "Microsoft Graph が現在このアプリからの要求を制限しています。",
        "フローは保存されていません。{seconds} 秒後にもう一度保存してください。",
    ),
    "AppointmentNotFound": ErrorText(
        404,
        "The Bookings business {business} has no such appointment (it may be cancelled already).",
        "Check the appointment id; list the business's appointments in Bookings.",
        "Bookings ビジネス {business} にその予定はありません (既にキャンセルされた可能性があります)。",
        "予定 ID を確認してください。Bookings でビジネスの予定を確認できます。",
    ),
    "NotificationNotPersisted": ErrorText(
        503,
        "The notification could not be stored.",
        "Microsoft Graph retries this notification by itself; nothing to do.",
        "通知を保存できませんでした。",
        "Microsoft Graph が自動的に再送します。対応は不要です。",
    ),
    # --- the connector's actions; the remedies are for the flow maker ---
    "BookingsRoleNotAllowed": ErrorText(
        403,
        "Your role in the Bookings business {business} ({role}) cannot {action}.",
        "Ask an administrator of this Bookings business for a role that can ({allowed}: Bookings, Staff), or "
        "use a connection signed in as such a person.",
        "Bookings ビジネス {business} でのあなたの役割 ({role}) では、この操作 ({action}) はできません。",
        "この Bookings ビジネスの管理者に、操作できる役割 ({allowed}) を付与してもらうか (Bookings の [スタッフ])、"
        "そのような役割を持つユーザーの接続を使用してください。",
    ),
    # --- booking (Create an appointment): Graph's refusals, and whether retrying helps -------------------------
    "AppointmentRejected": ErrorText(
        400,
        "Microsoft Bookings did not accept the appointment for {business}: {reason}",
        "Sending the same request again will not help. Check the service, the staff members, the times (within "
        "business hours, as long as the service takes) and the customer, then send the corrected request.",
        "Microsoft Bookings は {business} の予定を受け付けませんでした: {reason}",
        "同じリクエストを再送しても結果は変わりません。サービス、スタッフ、"
        "時間 (営業時間内でサービスの所要時間どおりか)、顧客を確認し、修正したリクエストを送信してください。",
    ),
    "AppointmentSlotTaken": ErrorText(
        409,
        "Microsoft Bookings did not book the appointment for {business}: the time is not free ({reason}).",
        "Sending the same request again will not help: pick another time or staff member (List appointments "
        "shows what is booked), then send the new request.",
        "Microsoft Bookings は {business} の予定を登録しませんでした: その時間は空いていません ({reason})。",
        "同じリクエストを再送しても結果は変わりません。別の時間またはスタッフを選び (予定の一覧で予約済みの時間を"
        "確認できます)、新しいリクエストを送信してください。",
    ),
    "AppointmentNotBooked": ErrorText(
        503,
        "Microsoft Bookings did not book the appointment for {business} this time ({dependency}); no appointment "
        "was made.",
        "Retrying helps: send the same request again in {seconds} seconds (Power Automate's retry policy does so "
        "by itself). The same request never books twice.",
        "Microsoft Bookings は今回 {business} の予定を登録しませんでした ({dependency})。予定は作成されていません。",
        "再試行すると解決します。{seconds} 秒後に同じリクエストを再送してください (Power Automate の再試行ポリシーが"
        "自動的に行います)。同じリクエストで二重に予約されることはありません。",
    ),
    "AppointmentBookingInProgress": ErrorText(
        429,
        "The same booking for {business} is being made by another request right now.",
        "Retrying helps: send the same request again in {seconds} seconds; it is then answered with the "
        "appointment that request made.",
        "{business} の同じ予約が、別のリクエストで現在処理中です。",
        "再試行すると解決します。{seconds} 秒後に同じリクエストを再送してください。"
        "そのリクエストで作成された予定が返されます。",
    ),
    "IdempotencyKeyReused": ErrorText(
        422,
        "The Idempotency-Key of this request was used within the last {hours} hours for another booking "
        "with {business}.",
        "Sending the same request again will not help: give each booking its own key (for example the flow run's "
        "id and the item's index), or leave the header out.",
        "このリクエストの Idempotency-Key は、過去 {hours} 時間以内に {business} の別の予約で使用されています。",
        "同じリクエストを再送しても結果は変わりません。予約ごとに別のキー (フロー実行の ID と項目の番号など) を"
        "指定するか、ヘッダーを省略してください。",
    ),
    "FlowNotFound": ErrorText(
        404,
        "The Bookings business {business} has no flow {id}.",
        "Pick the flow from the list (List the appointment flows of a Bookings business); it may have been "
        "deleted or its trigger changed.",
        "Bookings ビジネス {business} にフロー {id} はありません。",
        "一覧 (Bookings ビジネスの予定フローの一覧) からフローを選んでください。"
        "削除されたか、トリガーが変更された可能性があります。",
    ),
    # --- test events and dead-letter replay: what cannot be used to flood (issue 25, item 4) ---
    "TooManyTestEvents": ErrorText(
        429,
        "The flow {id} was sent test events too often: at most {burst} at once, then {perMinute} a minute.",
        "Wait {seconds} seconds, then send the test event again.",
        "フロー {id} へのテスト イベントの送信が多すぎます "
        "(一度に {burst} 件まで、その後は 1 分あたり {perMinute} 件まで)。",
        "{seconds} 秒待ってから、もう一度テスト イベントを送信してください。",
    ),
    "DeadLetterBeingReplayed": ErrorText(
        409,
        "The dead letter {id} is being replayed by another request right now.",
        "Nothing to do: it is on its way to the flow. List the dead letters in a few minutes; if it is there "
        "again, its flow refused it again.",
        "配信不能メッセージ {id} は、別の要求によって現在再送中です。",
        "対応は不要です (フローへ送信中です)。数分後に配信不能メッセージの一覧を確認し、再び表示される場合はフローが"
        "再度受け付けなかったことを示します。",
    ),
    # --- dead letters; the remedies are for the business's administrators ---
    "FlowExportNotFound": ErrorText(
        404,
        "There is no flow export {export} in the flow-backups container.",
        "Run scripts/restore-flows.sh --list to see the exports, and name one with --export; with none, the daily "
        "export (BACKUP_SCHEDULE) has not run yet, or the container was emptied: undelete it (infra/README.md, "
        "Restoring the flows).",
        "flow-backups コンテナーにフローのエクスポート {export} はありません。",
        "scripts/restore-flows.sh --list でエクスポートの一覧を確認し、--export で指定してください。"
        "一覧が空の場合は、毎日のエクスポート (BACKUP_SCHEDULE) がまだ実行されていないか、"
        "コンテナーが空にされています。"
        "削除を取り消してください (infra/README.md の「Restoring the flows」)。",
    ),
    "DeadLetterNotFound": ErrorText(
        404,
        "The Bookings business {business} has no dead letter {id}.",
        "List the dead letters (GET …/deadletters) and use an id from that list; it may have been replayed "
        "already.",
        "Bookings ビジネス {business} に配信不能メッセージ {id} はありません。",
        "配信不能メッセージの一覧 (GET …/deadletters) を取得し、その一覧の id を使用してください。"
        "既に再送済みの可能性があります。",
    ),
    "DeadLetterNotReplayable": ErrorText(
        410,
        "The dead letter {id} cannot be delivered again: {reason}. It has been discarded.",
        "Nothing to replay. If the flow should still receive appointments, save it again in Power Automate.",
        "配信不能メッセージ {id} は再送できません: {reason}。このメッセージは破棄されました。",
        "再送するものはありません。フローで引き続き予定を受け取る場合は、Power Automate でフローをもう一度保存して"
        "ください。",
    ),
    # --- a flow's deliveries, from Power Automate (issue 27, section 2) ---
    "NotFlowCreatorOrAdministrator": ErrorText(
        403,
        "Only the creator of the flow {id} and the administrators of the Bookings business {business} can see or "
        "replay its deliveries; your role there: {role}.",
        "Ask the flow's creator or an administrator of this Bookings business to run the action.",
        "フロー {id} の配信を表示または再送できるのは、そのフローの作成者と Bookings ビジネス {business} の"
        "管理者のみです。あなたの役割: {role}。",
        "フローの作成者またはこの Bookings ビジネスの管理者に、このアクションの実行を依頼してください。",
    ),
    "TooManyDirectoryLookups": ErrorText(
        429,
        "The list of your Bookings businesses was asked for too often.",
        "Wait {seconds} seconds, then open the list again.",
        "Bookings ビジネスの一覧の要求が多すぎます。",
        "{seconds} 秒待ってから、もう一度一覧を開いてください。",
    ),
    "GraphBudgetSpent": ErrorText(
        429,
        "The actions have used their share of Microsoft Graph for the Bookings business {business} for now: "
        "{perTenMinutes} calls in 10 minutes, the rest is kept for the triggers.",
        "Wait {seconds} seconds, then try again (Power Automate retries a 429 by itself). A flow that lists "
        "appointments in a loop should list fewer, or less often.",
        "アクションは Bookings ビジネス {business} に対する Microsoft Graph の割り当てを使い切りました "
        "(10 分あたり {perTenMinutes} 回。残りはトリガー用に確保されています)。",
        "{seconds} 秒待ってから、もう一度お試しください (Power Automate は 429 を自動で再試行します)。"
        "ループで予定を一覧表示するフローは、件数か頻度を減らしてください。",
    ),
    "GraphConsentMissing": ErrorText(
        500,
        "This app could not act on your behalf in Microsoft Graph ({reason}).",
        "Ask a Microsoft Entra administrator to grant admin consent to the app's delegated permissions "
        "Bookings.Read.All and User.Read (see the deployment guide), then try again.",
        "このアプリは Microsoft Graph であなたの代わりに操作できませんでした ({reason})。",
        "Microsoft Entra 管理者に、アプリの委任されたアクセス許可 Bookings.Read.All と User.Read への管理者の同意を"
        "依頼し (デプロイ ガイドを参照)、もう一度お試しください。",
    ),
    "InternalError": ErrorText(
        500,
        "Something went wrong on our side.",
        "Try again. If it persists, send the correlation id {correlationId} to the app's administrator.",
        "サーバー側でエラーが発生しました。",
        "もう一度お試しください。続く場合は相関 ID {correlationId} を管理者に伝えてください。",
    ),
}


class ApiError(Exception):
    """An error answer. ``code`` must be in ``CATALOGUE``; ``details`` fill its placeholders."""

    def __init__(self, code: str, *, headers: dict[str, str] | None = None, **details: Any) -> None:
        if code not in CATALOGUE:
            raise KeyError(f"error code {code!r} is not in the catalogue")
        super().__init__(code)
        self.code = code
        self.status = CATALOGUE[code].status
        self.details = details
        self.headers = headers or {}


def prefers_japanese(accept_language: str | None) -> bool:
    """True when the highest-weighted language in ``Accept-Language`` is Japanese."""
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        lang, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if lang and q > best_q:
            best, best_q = lang.lower(), q
    return best == "ja" or best.startswith("ja-")


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return "?"


def error_body(code: str, correlation_id: str, accept_language: str | None = None,
               **details: Any) -> dict[str, Any]:
    text = CATALOGUE[code]
    values = _Blank(details, correlationId=correlation_id)
    ja = prefers_japanese(accept_language)
    message = (text.message_ja if ja else text.message_en).format_map(values)
    remedy = (text.remedy_ja if ja else text.remedy_en).format_map(values)
    return {"error": {"code": code, "message": message, "remedy": remedy, "correlationId": correlation_id}}
