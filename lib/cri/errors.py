# Typed errors raised inside RPCs, and the decorator mapping them to gRPC
# status codes.

import functools
import traceback

import grpc

import fsutil
import misc


## Constants ##

# Longest status message, in characters (up to 4 bytes each). Messages
# echo request fields, and gRPC clients refuse metadata over 16 KiB: they
# would see RESOURCE_EXHAUSTED instead of our answer.
MESSAGE_MAX = 2048


## Globals ##

log = misc.log


## Exceptions ##

class CRI_Error(Exception):
   "Base of errors that become a gRPC status; code says which."
   code = grpc.StatusCode.UNKNOWN


class Aborted(CRI_Error):
   code = grpc.StatusCode.ABORTED


class Already_Exists(CRI_Error):
   code = grpc.StatusCode.ALREADY_EXISTS


class Deadline_Exceeded(CRI_Error):
   code = grpc.StatusCode.DEADLINE_EXCEEDED


class Failed_Precondition(CRI_Error):
   code = grpc.StatusCode.FAILED_PRECONDITION


class Internal(CRI_Error):
   code = grpc.StatusCode.INTERNAL


class Invalid_Argument(CRI_Error):
   code = grpc.StatusCode.INVALID_ARGUMENT


class Not_Found(CRI_Error):
   code = grpc.StatusCode.NOT_FOUND


class Resource_Exhausted(CRI_Error):
   code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Stream_Error(Exception):
   """A streaming backend failure (not a gRPC status): the message goes to
      the client's error stream."""


class Unavailable(CRI_Error):
   code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(CRI_Error):
   code = grpc.StatusCode.UNIMPLEMENTED


## Functions ##

def message_cut(msg):
   """Return status message msg cut to about MESSAGE_MAX characters, its
      start and end kept.

      >>> m = message_cut("start " + "x" * 5000 + " end")
      >>> (m[:6], m[-4:], "[cut]" in m, len(m) <= MESSAGE_MAX)
      ('start ', ' end', True, True)
   """
   if (len(msg) <= MESSAGE_MAX):
      return msg
   half = MESSAGE_MAX // 2 - 8
   return "%s [cut] %s" % (msg[:half], msg[-half:])


def request_decoding(handler):
   """Return RPC method handler with its request parsed by the method
      itself, so a request that is no valid message (e.g. invalid UTF-8
      in a string) gets INVALID_ARGUMENT; gRPC would answer INTERNAL."""
   decode = handler.request_deserializer
   if (decode is None or handler.request_streaming):
      return handler
   def request_parse(raw, context):
      try:
         return decode(raw)
      except Exception as x:
         log.log(misc.LOG_LEVELS["verbose"], "malformed request: %s", x)
         context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                       message_cut("malformed request: %s" % x))
   if (handler.response_streaming):
      inner = handler.unary_stream
      def method(raw, context):
         return inner(request_parse(raw, context), context)
      return grpc.unary_stream_rpc_method_handler(
         method, response_serializer=handler.response_serializer)
   inner = handler.unary_unary
   def method(raw, context):
      return inner(request_parse(raw, context), context)
   return grpc.unary_unary_rpc_method_handler(
      method, response_serializer=handler.response_serializer)


def rpc(method):
   """Decorate a servicer method: typed errors become their status code,
      a full disk RESOURCE_EXHAUSTED, anything else INTERNAL with a logged
      traceback. The server keeps running whatever happens."""
   name = method.__name__
   @functools.wraps(method)
   def wrapper(self, request, context):
      try:
         return method(self, request, context)
      except CRI_Error as x:
         log.log(misc.LOG_LEVELS["verbose"], "%s: %s: %s", name,
                 x.code.name, message_cut(str(x)))
         context.abort(x.code, message_cut(str(x)))
      except OSError as x:
         if (fsutil.enospc_p(x)):
            log.error("%s: disk full: %s", name, x)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          message_cut("no space left: %s" % x))
         log.error("%s: unexpected error:\n%s", name, traceback.format_exc())
         context.abort(grpc.StatusCode.INTERNAL,
                       message_cut("%s: %s" % (name, x)))
      except Exception as x:
         log.error("%s: unexpected error:\n%s", name, traceback.format_exc())
         context.abort(grpc.StatusCode.INTERNAL,
                       message_cut("%s: internal error: %s" % (name, x)))
   return wrapper


def unimplemented(name, what):
   """Return a servicer method answering UNIMPLEMENTED for RPC name, with
      what saying why."""
   def method(self, request, context):
      context.abort(grpc.StatusCode.UNIMPLEMENTED,
                    "%s not implemented: %s" % (name, what))
   method.__name__ = name
   return method


## Classes ##

class Request_Decoder(grpc.ServerInterceptor):
   "Server interceptor applying request_decoding() to every method."

   def intercept_service(self, continuation, details):
      h = continuation(details)
      return None if h is None else request_decoding(h)
