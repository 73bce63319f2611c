# No labels: re-centre (mean), re-scale (moments) or re-colour (CORAL) the new lab's class-token
# features onto the in-domain ones, folded into the head, and EM re-estimation of the class
# priors (Saerens et al. 2002). See README.md.
import numpy as np
D,C=192,14
names=[l.strip() for l in open('/tmp/fe_classes.txt')]
grp={'Band Neutrophil':'Neutrophil','Segmented Neutrophil':'Neutrophil','Neutrophil':'Neutrophil','Eosinophil':'Eosinophil','Lymphocyte':'Lymphocyte','Monocyte':'Monocyte','Basophil':'Basophil'}
def load(s):
    f=np.fromfile(f'/tmp/fe_{s}.f32',np.float32).reshape(-1,D); lab=[l.strip() for l in open(f'/tmp/fe_{s}.lab')]; return f.astype(np.float64),lab
h=np.fromfile('/tmp/fe_bccd_train.f32.head',np.float32); W=h[:C*D].reshape(C,D).astype(np.float64); b=h[C*D:].astype(np.float64)
fs,ls=load('wbc_val'); ft,lt=load('bccd_train'); fx,lx=load('bccd_test')
def acc_bccd(f,W,b,lab,prior=None):
    z=f@W.T+b
    if prior is not None: z=z+np.log(prior)
    p=z.argmax(1); return np.mean([grp.get(names[k])==l for k,l in zip(p,lab)])
def acc_wbc(f,W,b,lab): return np.mean([names[k]==l for k,l in zip((f@W.T+b).argmax(1),lab)])
print('wbc val (500) none', acc_wbc(fs,W,b,ls))
mus,sds=fs.mean(0),fs.std(0)+1e-6
for tname,tf in [('adapt97',ft),('test-itself',fx)]:
    mut,sdt=tf.mean(0),tf.std(0)+1e-6
    print(tname)
    print('  none  train %.3f test %.3f'%(acc_bccd(ft,W,b,lt),acc_bccd(fx,W,b,lx)))
    b2=b+W@(mus-mut); print('  mean  train %.3f test %.3f'%(acc_bccd(ft,W,b2,lt),acc_bccd(fx,W,b2,lx)))
    A=sds/sdt; W3=W*A; b3=b+W@mus-W3@mut; print('  moments train %.3f test %.3f'%(acc_bccd(ft,W3,b3,lt),acc_bccd(fx,W3,b3,lx)))
    # CORAL full
    cs=np.cov(fs.T)+1e-3*np.eye(D); ctg=np.cov(tf.T)+1e-1*np.eye(D)
    def msqrt(M,inv=False):
        w,V=np.linalg.eigh(M); w=np.maximum(w,1e-8); return (V*(w**(-0.5 if inv else 0.5)))@V.T
    A4=msqrt(cs)@msqrt(ctg,True); W4=W@A4; b4=b+W@mus-W4@mut
    print('  coral  train %.3f test %.3f'%(acc_bccd(ft,W4,b4,lt),acc_bccd(fx,W4,b4,lx)))
# prior EM (Saerens) on test with mean alignment from adapt97
def em(z,iters=50):
    p0=np.ones(C)/C  # training prior approx uniform? use val predicted prior
    pr=p0.copy()
    for _ in range(iters):
        q=np.exp(z-z.max(1,keepdims=True))*pr; q/=q.sum(1,keepdims=True); pr=q.mean(0)
    return pr
mut=ft.mean(0); b2=b+W@(mus-mut)
for nm,(WW,bb) in {'none':(W,b),'mean':(W,b2)}.items():
    pr=em(ft@WW.T+bb)
    print('EM prior from adapt97 cells on',nm,': train %.3f test %.3f'%(acc_bccd(ft,WW,bb,lt,pr*C),acc_bccd(fx,WW,bb,lx,pr*C)))
