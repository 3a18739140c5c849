# The chart beside docs/benchmarks.md; scripts/bench runs it as
#   gnuplot -e "dir='CHART_DIR'; out='PNG'" bench/chart.gp
# with the data files bench/report.lua wrote into CHART_DIR: one per panel,
# rows of  "label" value colour  (medians).
load dir.'/vars.gp'

set terminal pngcairo size 1600,820 font "sans,10"
set output out

# one colour per system, the same in every panel
set linetype 1 lc rgb "#cc3311"   # iocore
set linetype 2 lc rgb "#0077bb"   # luv
set linetype 3 lc rgb "#009988"   # nginx C
set linetype 4 lc rgb "#33bbee"   # nginx Lua
set linetype 5 lc rgb "#ee7733"   # redis-server
set linetype 6 lc rgb "#999999"   # floor
set linetype 7 lc rgb "#aa3377"   # io_uring 1 thread
set linetype 8 lc rgb "#cc3311"   # io_uring 2 threads (= iocore default)
set linetype 9 lc rgb "#ddaa33"   # epoll 1 thread
set linetype 10 lc rgb "#bb5566"  # epoll 2 threads
set linetype 11 lc rgb "#ee99aa"  # iocore with luv's RESP parser (control)
set linetype 12 lc rgb "#882255"  # iocore at its default thread count

set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics lc rgb "#dddddd"
set border 3
set xtics nomirror noenhanced font "sans,9" rotate by -25
set ytics nomirror
set yrange [0:*]
set offsets 0.5, 0.5, 0, 0
set key off

set multiplot layout 2,4 title "iocore vs peers: server CPU µs per request (median, lower is better) and memory per idle connection — ".title_machine noenhanced

set title "1. HTTP keep-alive, wrk -c100"
plot dir.'/http.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,0.8 font 'sans,9'

set title "2. new connection per request, ab -c50"
plot dir.'/conn.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,0.8 font 'sans,9'

set title "3. RESP, redis-benchmark -P16 -c50"
plot dir.'/resp.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.2f', $2)) with labels offset 0,0.8 font 'sans,9'

set title "4. server RSS per idle connection, bytes"
set key top left
plot dir.'/idle.dat' using 0:2:3:xtic(1) with boxes lc variable notitle, \
     '' using 0:2:(sprintf('%.0f', $2)) with labels offset 0,0.8 font 'sans,9' notitle, \
     400 with lines dt 2 lw 2 lc rgb "#000000" title "target 400 B"
set key off

set title "5. iocore HTTP keep-alive: backend × threads"
plot dir.'/var-http.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,0.8 font 'sans,9'

set title "5. iocore new connection per request"
plot dir.'/var-conn.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.1f', $2)) with labels offset 0,0.8 font 'sans,9'

set title "5. iocore RESP"
plot dir.'/var-resp.dat' using 0:2:3:xtic(1) with boxes lc variable, \
     '' using 0:2:(sprintf('%.2f', $2)) with labels offset 0,0.8 font 'sans,9'

unset multiplot
