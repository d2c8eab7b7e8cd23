"""Independent Python rendition of convtt-data's Moving-MNIST generator (worker/src/data/rng.rs,
moving_mnist.rs) for one clip: seed 1, split stream 0 (train), index 0, 20 frames of 64x64, two
digits from the bundled MNIST test images. It prints the SHA-256 of the clip bytes, which must equal
the value pinned in moving_mnist.rs `clips_are_pinned` (checked when this was written:
04f03b331f13729922fa30dea78a6bd607882942113c6051632d15d2e435da8b). Standard library only:
    python3 worker/scripts/moving_mnist_reference.py
"""
import gzip, hashlib, math, os

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'assets')
M=(1<<64)-1; G=0x9E3779B97F4A7C15
def mix(z):
    z=((z^(z>>30))*0xBF58476D1CE4E5B9)&M; z=((z^(z>>27))*0x94D049BB133111EB)&M; return z^(z>>31)
def rotl(x,r): return ((x<<r)|(x>>(64-r)))&M
class Rng:
    def __init__(s, seed, path):
        st=mix((seed+G)&M)
        for w in path: st=mix(rotl(st,23) ^ mix(w ^ 0xD1B54A32D192ED03))
        s.s=st
    def u64(s): s.s=(s.s+G)&M; return mix(s.s)
    def f64(s): return (s.u64()>>11)*(1.0/(1<<53))
    def below(s,n): return (s.u64()*n)>>64
raw=gzip.open(os.path.join(ASSETS, 'mnist', 't10k-images-idx3-ubyte.gz')).read()[16:]
T,S=20,64; free=S-28
r=Rng(1,[0x4D4D4E53,0,0])
clip=bytearray(T*S*S)
for d in range(2):
    x=r.f64(); y=r.f64(); th=r.f64()*2*math.pi; vx=math.cos(th)*0.1; vy=math.sin(th)*0.1
    path=[]
    for t in range(T):
        y+=vy; x+=vx
        if x<=0: x=0.0; vx=-vx
        if x>=1: x=1.0; vx=-vx
        if y<=0: y=0.0; vy=-vy
        if y>=1: y=1.0; vy=-vy
        path.append((int(free*y), int(free*x)))
    k=r.below(10000); img=raw[k*784:(k+1)*784]
    for t,(top,left) in enumerate(path):
        for rr in range(28):
            for c in range(28):
                i=t*S*S+(top+rr)*S+left+c
                clip[i]=max(clip[i], img[rr*28+c])
print(hashlib.sha256(bytes(clip)).hexdigest())
