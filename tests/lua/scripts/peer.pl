#!/usr/bin/perl
# A TCP peer for the Lua suite's flow, half-close and time-out tests: a client
# whose timing the test controls (slow readers, half-closing writers, readers
# that never read) and a "black hole" listener whose accept queue is full so
# connects to it hang. Only perl-base modules (every Debian system has them).
#
#   perl peer.pl --port P [options]        a client of 127.0.0.1:P
#   perl peer.pl --blackhole               prints "port P"; connects hang
#
# Client options, in the order they act:
#   --rcvbuf N        SO_RCVBUF before connecting (a slow reader's window)
#   --send-file F     send F's bytes (blocking); then prints "sent N"
#   --chunk N --interval S   ... in writes of N bytes, S seconds apart
#   --send STR        send STR
#   --shut-wr         then shutdown(SHUT_WR); prints "shut"
#   --read-delay S    read nothing for S seconds (fractions allowed)
#   --no-read         never read: sleep until the deadline
#   --rate BPS        read at most BPS bytes per second (10 ms ticks)
#   --out F           append what is read to F
#   --close-at N      close (without reading more) once N bytes were read
# Then it reads to EOF and prints "eof N" (N = bytes read), or "error N MSG"
# on a reset; --after-eof STR: then sends STR and prints "sent-after-eof". --deadline S (default 60): the process exits 3 after S seconds
# whatever it is doing (it is always bounded). Exit 0 after EOF.
use strict;
use warnings;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF SO_SNDBUF IPPROTO_TCP inet_aton sockaddr_in);
use IO::Handle;

STDOUT->autoflush(1);
my %o = (deadline => 60);
while (@ARGV) {
  my $k = shift @ARGV;
  if ($k =~ /^--(shut-wr|no-read|blackhole)$/) { $o{$1} = 1; next; }
  die "peer.pl: $k needs a value\n" unless @ARGV;
  die "peer.pl: unknown option $k\n" unless $k =~ /^--(port|rcvbuf|send-file|send|chunk|interval|after-eof|read-delay|rate|out|close-at|deadline)$/;
  $o{$1} = shift @ARGV;
}
$SIG{ALRM} = sub { print "deadline\n"; exit 3; };
alarm($o{deadline});

sub pause_s { select(undef, undef, undef, $_[0]); }

if ($o{blackhole}) {
  # backlog 0: the kernel keeps one connection in the accept queue; with it
  # full (and nobody accepting), every later SYN is dropped.
  socket(my $l, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
  bind($l, sockaddr_in(0, inet_aton("127.0.0.1"))) or die "bind: $!";
  listen($l, 0) or die "listen: $!";
  my ($port) = sockaddr_in(getsockname($l));
  my @fill;
  for (1 .. 2) {
    socket(my $c, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    $c->blocking(0);
    connect($c, sockaddr_in($port, inet_aton("127.0.0.1")));
    push @fill, $c;
  }
  pause_s(0.2);
  print "port $port\n";
  pause_s($o{deadline});
  exit 0;
}

die "peer.pl: --port is required\n" unless $o{port};
socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack("i", $o{rcvbuf})) or die "rcvbuf: $!" if $o{rcvbuf};
connect($s, sockaddr_in($o{port}, inet_aton("127.0.0.1"))) or do { print "connect failed: $!\n"; exit 2; };
print "connected\n";

if (defined $o{'send-file'}) {
  open(my $f, '<:raw', $o{'send-file'}) or die "open $o{'send-file'}: $!";
  local $/;
  my $data = <$f>;
  close $f;
  my $off = 0;
  while ($off < length $data) {
    my $len = length($data) - $off;
    $len = $o{chunk} if $o{chunk} && $o{chunk} < $len;
    my $n = syswrite($s, $data, $len, $off);
    unless (defined $n) { print "error 0 send: $!\n"; exit 1; }
    $off += $n;
    pause_s($o{interval}) if $o{interval} && $off < length $data;
  }
  print "sent $off\n";
}
if (defined $o{send}) {
  my $n = syswrite($s, $o{send});
  print "sent $n\n";
}
if ($o{'shut-wr'}) {
  shutdown($s, 1) or die "shutdown: $!";
  print "shut\n";
}
if ($o{'no-read'}) {
  pause_s($o{deadline});
  exit 0;
}
pause_s($o{'read-delay'}) if $o{'read-delay'};

my $out;
if (defined $o{out}) { open($out, '>>:raw', $o{out}) or die "open $o{out}: $!"; $out->autoflush(1); }
my $total = 0;
my $per_tick = $o{rate} ? int($o{rate} / 100) || 1 : 1 << 20;
while (1) {
  my $want = $per_tick;
  $want = $o{'close-at'} - $total if defined $o{'close-at'} && $o{'close-at'} - $total < $want;
  if (defined $o{'close-at'} && $want <= 0) {
    close $s;
    print "closed $total\n";
    exit 0;
  }
  my $got = 0;
  while ($got < $want) {
    my $buf;
    my $n = sysread($s, $buf, $want - $got);
    if (!defined $n) { print "error ", $total + $got, " $!\n"; exit 1; }
    if ($n == 0) {
      $total += $got;
      print "eof $total\n";
      if (defined $o{'after-eof'}) {
        my $w = syswrite($s, $o{'after-eof'});
        print defined $w ? "sent-after-eof\n" : "error-after-eof $!\n";
      }
      exit 0;
    }
    print $out $buf if $out;
    $got += $n;
    last unless $o{rate}; # unthrottled: one read per loop
  }
  $total += $got;
  pause_s(0.01) if $o{rate};
}
