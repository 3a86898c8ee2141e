"""The completion behind `parse()`'s finish-reason errors.

`parse()` (chat, with a `response_format`) raises `LengthFinishReasonError` or
`ContentFilterFinishReasonError` after the reply arrived: the call failed, yet the server
billed the completion. Its span keeps that usage, whichever way the call was made (plain,
`with_raw_response`, `with_streaming_response`) and whichever SDK line raised it.
"""

from __future__ import annotations

from typing import Any

# The errors `parse()` raises for a reply cut short before its format was complete.
CUT_SHORT = ("LengthFinishReasonError", "ContentFilterFinishReasonError")
# The SDK's function that turns a completion into `parse()`'s result, and its argument.
_PARSING_FUNCTION = "parse_chat_completion"
_PARSED_ARGUMENT = "chat_completion"


def completion_of(exc: BaseException) -> Any:
    """The completion an exception carries (`exc.completion`), or None. May raise: a
    property of the exception's own is read."""
    completion = getattr(exc, "completion", None)
    return _parse_refused(exc) if completion is None else completion


def cut_short_completion(exc: BaseException) -> Any:
    """The completion of one of `CUT_SHORT` (None for any other error). May raise."""
    return completion_of(exc) if type(exc).__name__ in CUT_SHORT else None


def _parse_refused(exc: BaseException) -> Any:
    """The completion a `ContentFilterFinishReasonError` was raised for, where the SDK did
    not put it on the exception (openai < 3 raises it bare): the SDK's parsing function
    raised it with the completion, billed usage and all, as its argument."""
    if type(exc).__name__ != "ContentFilterFinishReasonError":
        return None
    completion = None
    traceback = exc.__traceback__
    while traceback is not None:  # the innermost such frame is the one that raised it
        frame = traceback.tb_frame
        if frame.f_code.co_name == _PARSING_FUNCTION:
            completion = frame.f_locals.get(_PARSED_ARGUMENT, completion)
        traceback = traceback.tb_next
    return completion
