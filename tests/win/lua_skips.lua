-- The Lua suite's tests that do not run on Windows (tests/win/run_lua.sh runs
-- the suite as `wine lua.exe`), each with the reason printed as its SKIP.
-- tests/lua/helpers.lua runs them as skips when it runs on Windows; a key
-- without a dot names a whole test class.
local TEST_SERVER = "iocore.test's start_server (lua/iocore/test.lua) runs servers through "
  .. "POSIX tools (sh, setsid, kill, sleep) and has no Windows implementation yet"

local NO_TCP_INFO = "under wine 8 the core cannot see a slow reader take bytes the kernel "
  .. "already has (no SIO_TCP_INFO, src/net/tcpinfo.c; an overlapped WSASend reports only when "
  .. "all of it is in the kernel), so this close/idle/grace timing cannot hold there (Windows 10 "
  .. "1703 and later has SIO_TCP_INFO)"

return {
  ["TestHalfClose.test_close_timeout_waits_while_the_peer_makes_progress"] = NO_TCP_INFO,
  ["TestHalfClose.test_graceful_close_to_a_slow_reader_delivers_everything"] = NO_TCP_INFO,
  ["TestTimeouts.test_idle_timeout_counts_writes_so_a_download_is_not_cut"] = NO_TCP_INFO,
  ["TestStop.test_stop_grace_expiry_closes_gracefully_what_is_left"] = NO_TCP_INFO,
  ["TestStop.test_stop_resets_a_slow_flush_close_timeout_plus_1s_later_with_etimedout"] = NO_TCP_INFO,
  TestEchoServer = "examples/test_example.lua starts examples/server.lua with iocore.test's "
    .. "start_server, which runs servers through POSIX tools (sh, setsid, kill, sleep) "
    .. "and has no Windows implementation yet",
  ["TestTestingHelper.test_start_server_waits_for_ready_and_stop_reaps_it"] = TEST_SERVER,
  ["TestTestingHelper.test_stop_kills_a_server_that_ignores_sigterm"] = TEST_SERVER,
  ["TestTestingHelper.test_a_server_that_never_gets_ready_times_out_and_is_killed"] = TEST_SERVER,
  ["TestTestingHelper.test_a_server_that_exits_early_is_reported_with_its_output"] = TEST_SERVER,
  TestSource = "it reads src/lua's C sources through ls; a check of the source text, "
    .. "the same on every platform, which the Linux suite runs",
  ["TestStream.test_dial_to_a_refused_port_is_econnrefused"] =
    "it dials the port of a listener it has just closed; on IOCP the listening socket "
    .. "is closed only once its cancelled AcceptEx operations are back (a dispatch later), "
    .. "so the dial may still be accepted; test_connect_to_closed_port_reports_econnrefused"
    .. "_then_closes_once checks refusals on a port closed for good",
  ["TestSessions.test_sockets_are_not_inherited_by_child_processes"] =
    "it lists a child's /proc/self/fd, which is Linux's; Windows sockets are made "
    .. "with WSA_FLAG_NO_HANDLE_INHERIT (src/net/socket.c)",
  ["TestTimers.test_sigint_stops_a_script_and_signals_false_ignores_it"] =
    "its second half expects death by SIGTERM (status 143); Windows has no SIGTERM "
    .. "(wine kills the process outright), and Ctrl-C stopping run() is checked by "
    .. "test_sigterm_stops_server_example_gracefully and tests/win/lua_server_smoke.sh",
}
