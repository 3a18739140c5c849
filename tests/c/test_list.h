/* The conformance suite: every test, by the behaviour it pins, with its
 * time-out in milliseconds (0 = the default, 30 s). runner.c turns this
 * table into declarations and the list it runs; each test is a
 * `void test_<name>(void)` in one of the test_*.c files. */

#define TEST_LIST(X)                                           \
  /* test_core.c */                                            \
  X(error_names_and_texts, 0)                                  \
  X(backends_lists_the_chosen_backend, 0)                      \
  X(auto_backend_honours_iocore_backend_env, 0)                \
  X(dispatch_timeout_returns_zero, 0)                          \
  X(post_runs_only_inside_dispatch, 0)                         \
  X(post_from_4_threads_runs_each_exactly_once, 60000)         \
  X(stop_wakes_every_worker, 0)                                \
  X(stop_from_callback_cancels_dispatch, 0)                    \
  X(core_destroy_refuses_while_objects_alive, 0)               \
  X(close_all_closes_listeners_and_sessions, 0)                \
  X(two_cores_run_independently, 0)                    \
  /* test_uring.c */                                           \
  X(uring_worker_rings_run_single_issuer_defer_taskrun, 60000) \
  X(uring_mode_falls_back_to_coop_taskrun, 60000)              \
  X(uring_mode_falls_back_to_coop_without_single_issuer, 60000) \
  X(uring_mode_falls_back_to_plain_rings, 60000)               \
  X(uring_rings_handed_over_mid_send_lose_no_byte, 60000)      \
  X(uring_foreign_thread_sends_cancels_and_wakes_reach_owner_rings, 60000) \
  X(uring_accepts_spread_over_worker_rings, 60000)             \
  X(uring_graceful_close_closes_sockets_on_the_ring, 60000)    \
  /* test_timer.c */                                           \
  X(timers_fire_in_order, 0)                                   \
  X(repeating_timer_repeats_and_cancel_stops_it, 0)            \
  X(timer_cancel_before_deadline_never_fires, 0)               \
  X(timer_release_keeps_it_running, 0)                         \
  X(timers_on_4_workers_fire_exactly_once, 0)                  \
  X(timer_cancel_from_another_thread_stops_it, 0)              \
  X(timer_ids_are_never_reused, 0)                             \
  X(timer_started_from_callback_fires, 0)              \
  X(slow_repeating_timers_leave_sockets_served, 0)      \
  X(reposting_post_leaves_sockets_served, 0)           \
  /* test_address.c */                                         \
  X(address_parse_rejects_malformed_forms, 0)                  \
  X(address_parse_and_format_round_trip, 0)                    \
  X(address_parse_honours_explicit_length, 0)                  \
  X(address_format_never_truncates, 0)                         \
  X(listen_and_connect_reject_bad_addresses, 0)                \
  X(listen_reports_eaddrinuse, 0)                              \
  /* test_listener.c */                                        \
  X(listener_keeps_n_accepts_posted, 0)                        \
  X(listener_default_accepts_is_16, 0)                         \
  X(listener_on_ipv6_loopback_accepts, 0)                      \
  X(close_listener_with_accepts_in_flight_frees_everything, 0) \
  X(listener_close_keeps_accepted_sessions, 0)                 \
  X(listener_max_connections_rejects_excess, 0)                \
  X(listener_set_accept_replaces_callback, 0)                  \
  X(reuseport_lets_two_listeners_share_a_port, 0)      \
  /* test_cork.c */                                            \
  X(corked_sends_wait_for_uncork_then_arrive_in_order, 0)      \
  X(cork_starts_the_write_once_cork_max_bytes_are_queued, 0)   \
  X(close_of_a_corked_session_writes_what_it_held, 0)          \
  X(shutdown_of_a_corked_session_writes_what_it_held, 0)       \
  /* test_session.c */                                         \
  X(connect_succeeds, 0)                                       \
  X(connect_refused_reports_econnrefused, 0)                   \
  X(send_before_connect_completes_is_delivered, 0)             \
  X(session_accessors_report_ids_addresses_userdata, 0)        \
  X(sendv_many_small_buffers_arrive_in_order, 0)               \
  X(on_drain_runs_when_queue_empties, 0)                       \
  X(max_pending_rejects_send_with_enobufs, 0)                  \
  X(idle_timeout_closes_silent_session, 0)                     \
  X(retained_session_outlives_on_close, 0)                     \
  X(active_count_covers_an_on_close_still_running, 0)  \
  X(sends_from_4_threads_stay_whole_and_ordered_per_thread, 0) \
  /* test_close.c */                                           \
  X(peer_fin_closes_with_zero_after_all_data, 0)               \
  X(graceful_close_delivers_queued_data_before_fin, 0)         \
  X(graceful_close_ends_within_linger_when_peer_stays_open, 0) \
  X(abort_drops_queued_data_and_resets, 0)                     \
  X(peer_reset_during_recv_closes_once, 0)                     \
  X(peer_reset_during_large_send_closes_once, 0)               \
  X(send_to_closed_peer_does_not_raise_sigpipe, 0)             \
  X(close_sessions_with_ops_in_flight_frees_everything, 60000) \
  /* test_close_path.c */                                      \
  X(close_goes_through_the_backends_async_shutdown_and_close, 0) \
  X(half_close_goes_through_the_backends_async_shutdown, 0)   \
  X(close_falls_back_to_syscalls_when_the_backend_refuses, 0) \
  X(async_shutdown_enotconn_ends_the_session_cleanly, 0)      \
  X(close_after_the_peers_fin_with_nothing_unacked_needs_no_shutdown, 0) \
  /* test_unix.c */                                            \
  X(unix_address_parse_and_format, 0)                          \
  X(unix_echo_and_the_address_strings_of_both_ends, 0)        \
  X(unix_listener_removes_its_socket_file_on_close, 0)         \
  X(unix_listener_leaves_a_newer_socket_file_alone, 0)         \
  X(unix_listener_replaces_a_stale_socket_file, 0)             \
  X(unix_listener_on_a_live_socket_file_is_eaddrinuse, 0)      \
  X(unix_path_too_long_is_enametoolong, 0)                     \
  X(unix_connect_to_a_missing_path_a_dead_file_or_a_full_backlog_fails_with_its_code, 0) \
  X(unix_graceful_close_delivers_everything_to_a_slow_reader, 60000) \
  X(unix_listen_and_connect_are_eafnosupport_on_windows, 0)   \
  X(unix_accepted_peer_is_the_name_a_client_bound, 0)         \
  /* test_echo.c */                                            \
  X(echo_large_stream_single_thread, 0)                        \
  X(echo_integrity_100_sessions_4_workers, 120000)             \
  X(session_callbacks_order_accept_recv_close, 60000)          \
  X(stats_count_bytes_and_sessions, 0)                         \
  X(small_queue_depth_still_carries_many_sessions, 0)  \
  /* test_emfile.c */                                          \
  X(emfile_neither_spins_nor_kills_listener, 60000)            \
  /* test_faults.c */                                          \
  X(faults_spec_is_parsed_strictly, 0)                         \
  X(echo_integrity_survives_injected_short_writes_and_eagain, 120000) \
  X(connects_complete_under_injected_eintr_and_eagain, 60000)  \
  X(accept_keeps_n_posted_under_injected_accept_failures, 60000) \
  X(injected_resets_close_sessions_once_and_leak_nothing, 120000) \
  X(injected_enomem_on_submit_is_an_error_not_a_hang, 60000) \
  /* test_api.c */                                             \
  X(now_ms_is_monotonic_and_cpu_count_positive, 0)             \
  X(batch_hook_runs_on_the_dispatching_thread_after_each_batch, 0) \
  X(foreach_session_visits_every_session_and_may_close_it, 0)  \
  X(close_listeners_leaves_sessions_open, 0)                   \
  X(session_fail_gives_its_cause_to_on_close, 0)               \
  X(session_user_slot_starts_null_and_keeps_a_pointer, 0)      \
  X(callbacks_given_on_the_stack_are_copied, 0)                \
  X(session_is_one_allocation_of_the_size_the_docs_state, 0)   \
  X(max_pending_above_4_gib_counts_as_4_gib, 0)                \
  X(listener_close_twice_with_a_reference_is_safe, 0)          \
  X(public_constants_match_the_docs, 0)                        \
  /* test_edges.c */                                           \
  X(graceful_close_waits_for_a_slow_reader_and_loses_nothing, 90000) \
  X(graceful_close_to_a_stalled_reader_times_out_with_etimedout, 60000) \
  X(graceful_close_ends_at_once_when_the_peer_has_everything_and_fins, 0) \
  X(shutdown_sends_fin_and_keeps_receiving_until_the_peer_fin, 0) \
  X(sends_after_the_peer_fin_go_out_until_the_owner_closes, 0) \
  X(session_pause_holds_data_until_resume, 60000)              \
  X(pause_from_inside_on_recv_stops_delivery, 0)               \
  X(idle_timeout_spares_an_active_download, 60000)             \
  X(write_timeout_closes_a_session_whose_peer_stopped_reading, 60000) \
  X(connect_timeout_and_failures_give_one_code_to_on_open_and_on_close, 0) \
  X(set_timeout_changes_a_live_session, 0)                     \
  X(send_on_an_empty_queue_is_taken_whatever_its_size, 60000)  \
  X(want_drain_brings_on_drain_for_a_send_written_at_once, 60000) \
  X(outbound_local_address_asked_before_the_connect_is_right_after, 0) \
  X(timers_fire_in_deadline_order_on_4_workers, 60000) \
  X(sweep_runs_only_while_a_session_needs_it, 0)               \
  /* test_proxy.c */                                           \
  X(proxy_v1_tcp4_and_tcp6_give_client_and_proxy_addresses, 0) \
  X(proxy_v1_unknown_keeps_the_real_peer, 0)                   \
  X(proxy_v2_tcp4_and_tcp6_give_addresses_and_skip_tlvs, 0)    \
  X(proxy_v2_local_unspec_unix_and_udp_keep_the_real_peer, 0)  \
  X(proxy_headers_truncated_at_every_byte_ask_for_more, 0)     \
  X(proxy_rejects_each_kind_of_malformed_header_with_eproto, 0) \
  X(proxy_never_waits_past_the_protocol_maximum, 0)            \
  X(proxy_build_writes_headers_the_parser_reads_back, 0) \
  X(proxy_reader_hands_over_the_bytes_after_the_header, 0)    \
  /* test_proxy_listener.c */                                  \
  X(proxy_listener_v1_and_v2_peer_is_the_client_and_data_follows, 0) \
  X(proxy_listener_bad_headers_close_unannounced_and_counted, 0) \
  X(proxy_listener_closes_a_silent_connection_at_the_deadline, 0) \
  X(proxy_header_timeout_matches_the_docs, 0)                  \
  /* test_session_framing.c */                                 \
  X(framed_session_one_on_recv_per_message_split_at_every_byte, 0) \
  X(framed_session_max_is_taken_and_max_plus_one_fails_with_emsgsize, 0) \
  X(framed_session_pause_in_on_recv_holds_later_messages_until_resume, 0) \
  X(framed_session_closed_in_on_recv_ends_cleanly_without_more_messages, 0) \
  X(framed_session_end_marks_follow_each_receives_messages, 0) \
  X(send_frame_prefixes_length_framed_sessions_only, 0)        \
  X(framing_options_are_checked, 0)                            \
  X(framing_constants_match_the_docs, 0)                       \
  /* test_connect_name.c */                                    \
  X(connect_to_a_host_name_resolves_then_connects, 0)          \
  X(connect_to_a_name_that_does_not_resolve_fails_with_enotfound, 0) \
  X(connect_by_name_abort_or_timeout_during_the_lookup_is_the_connect_failure, 0) \
  /* test_framing.c */                                         \
  X(framing_every_split_point_gives_the_same_messages, 0)      \
  X(framing_delivers_whole_messages_from_the_input_without_copying, 0) \
  X(framing_empty_messages_are_delivered_as_empty_strings, 0)  \
  X(framing_max_is_accepted_and_max_plus_one_is_emsgsize, 0)   \
  X(framing_too_long_is_known_before_the_message_ends, 0)      \
  X(framing_delimiter_that_overlaps_itself_splits_right, 0)    \
  X(framing_pause_holds_messages_until_resume, 0)              \
  X(framing_limits_and_prefix_encoding, 0) \
  /* test_resolve.c */                                         \
  X(resolve_localhost_gives_loopback_with_the_port, 0)         \
  X(resolve_ip6_localhost_resolves_to_ipv6_loopback, 0)        \
  X(resolve_unknown_name_gives_enotfound, 0)                   \
  X(resolve_literals_answer_without_a_thread, 0)               \
  X(resolve_rejects_malformed_names_at_once, 0)                \
  X(resolve_50_parallel_lookups_complete_exactly_once, 60000)  \
  X(resolve_destroy_with_a_lookup_in_flight_waits_for_it, 0)   \
  X(resolve_never_calls_back_inside_the_call, 0) \
  X(resolve_results_are_deduplicated_and_capped, 0) \
  X(protocols_doc_states_the_constants, 0) \
  /* test_buffer.c */                                          \
  X(buffer_is_one_allocation_with_counts_in_stats, 0)          \
  X(buffer_counts_are_exact_under_4_threads, 60000)            \
  X(buffer_to_many_sessions_arrives_byte_exact_through_partial_writes, 90000) \
  X(buffer_references_are_released_on_every_end_path, 120000) \
  X(send_buffer_follows_the_rules_of_send, 60000)              \
  X(broadcast_reaches_sessions_of_every_worker_and_skips_closing_ones, 60000) \
  X(broadcasts_from_4_threads_at_once_arrive_whole_and_in_order, 90000)
